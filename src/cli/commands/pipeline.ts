/** `mcrepl run`, `mcrepl tailer`, `mcrepl worker <dc>`: the components of each site (src/config/sites.ts). */
import { ConfigError } from '../../errors.js';
import { selectSites, siteOfDatacenter, type Site } from '../../config/sites.js';
import { mysqlFor } from '../../registry/accounts.js';
import { RegistrySweeper, sweepWhileRunning } from '../../registry/registry-sweeper.js';
import { DatacenterWorker } from '../../sink/datacenter-worker.js';
import { Tailer } from '../../source/tailer.js';
import type { Context } from '../context.js';
import { runDaemon, type ComponentSpec } from './daemon.js';
import { statusJson } from './status.js';

/** A component's name, with its site's when there are several. */
const named = (ctx: Context, site: Site, what: string) => (ctx.config.sites ? `${what} (site ${site.name})` : what);

function workersFor(ctx: Context, dcs: string[]): ComponentSpec[] {
  return dcs.map((dc) => {
    const site = siteOfDatacenter(ctx.config, dc);
    if (ctx.config.site !== undefined && site.name !== ctx.config.site) {
      throw new ConfigError([`data center '${dc}' is in site '${site.name}', not in --site ${ctx.config.site}`]);
    }
    const logger = ctx.config.sites ? ctx.logger.child({ site: site.name }) : ctx.logger;
    // The latest config read: a replacement starts with it.
    let config = site.config;
    return {
      name: named(ctx, site, `worker ${dc}`),
      create: () => new DatacenterWorker(config, dc, { logger, site: site.name }),
      reload: (all, running) => {
        const next = siteOfDatacenter(all, dc).config;
        const servers = next.datacenters[dc];
        if (!servers) {
          logger.error({ dc }, `SIGHUP: data center '${dc}' is no longer in the config; this worker goes on with its servers`);
          return;
        }
        config = next;
        // A data center's servers change while it runs; anything else takes a restart.
        if (running instanceof DatacenterWorker) {
          running.reconfigure(servers).catch((err: unknown) => logger.error({ dc, err: String(err) }, 'changing the servers failed'));
        }
      },
    };
  });
}

function tailer(ctx: Context, site: Site, resetCheckpoint: boolean): ComponentSpec {
  const logger = ctx.config.sites ? ctx.logger.child({ site: site.name }) : ctx.logger;
  return {
    name: named(ctx, site, 'tailer'),
    create: (attempt) => {
      // A replacement never resets again: it resumes from what its predecessor saved. It reads
      // the binlog of its site's source.
      const t = new Tailer(
        { ...site.config, mysql: site.source },
        { logger: logger.child({ c: 'tailer' }), site: site.name, resetCheckpoint: resetCheckpoint && attempt === 0, replicaSource: site.fallback !== undefined, ...(site.fallback ? { fallback: site.fallback } : {}) },
      );
      // The active tailer (of one site) also removes expired keys from the registry, on the
      // primary (decision 0018).
      if (site.sweepsRegistry) sweepWhileRunning(t, new RegistrySweeper(mysqlFor(ctx.config.mysql, 'tailer'), ctx.config.registry, logger.child({ c: 'registry-sweeper' })));
      return t;
    },
  };
}

const daemon = (ctx: Context, specs: ComponentSpec[]) => runDaemon(specs, ctx.logger, { heapGrowingPercent: ctx.config.memory.heapGrowingPercent, reload: ctx.reload, metrics: ctx.config.metrics, status: () => statusJson(ctx) });

export function runAll(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  const sites = selectSites(ctx.config, 'mcrepl run', true);
  return daemon(
    ctx,
    sites.flatMap((site) => [...workersFor(ctx, Object.keys(site.config.datacenters)), tailer(ctx, site, opts.resetCheckpoint ?? false)]),
  );
}

export function runTailer(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  const [site] = selectSites(ctx.config, 'mcrepl tailer');
  return daemon(ctx, [tailer(ctx, site!, opts.resetCheckpoint ?? false)]);
}

export function runWorkers(ctx: Context, dcs: string[]): Promise<number> {
  return daemon(ctx, workersFor(ctx, dcs));
}
