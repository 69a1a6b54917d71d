/** `mcrepl run`, `mcrepl tailer`, `mcrepl worker <dc>`. */
import { ConfigError } from '../../errors.js';
import { mysqlFor } from '../../registry/accounts.js';
import { RegistrySweeper, sweepWhileRunning } from '../../registry/registry-sweeper.js';
import { DatacenterWorker } from '../../sink/datacenter-worker.js';
import { Tailer } from '../../source/tailer.js';
import type { Context } from '../context.js';
import { runDaemon, type ComponentSpec } from './daemon.js';

function workersFor(ctx: Context, dcs: string[]): ComponentSpec[] {
  return dcs.map((dc) => {
    if (!ctx.config.datacenters[dc]) {
      throw new ConfigError([`no data center named '${dc}' in the config (known: ${Object.keys(ctx.config.datacenters).join(', ')})`]);
    }
    return { name: `worker ${dc}`, create: () => new DatacenterWorker(ctx.config, dc, { logger: ctx.logger }) };
  });
}

function tailer(ctx: Context, resetCheckpoint: boolean): ComponentSpec {
  return {
    name: 'tailer',
    create: (attempt) => {
      // A replacement never resets again: it resumes from what its predecessor saved.
      const t = new Tailer(ctx.config, { logger: ctx.logger.child({ c: 'tailer' }), resetCheckpoint: resetCheckpoint && attempt === 0 });
      // The active tailer also removes expired keys from the registry (decision 0018).
      sweepWhileRunning(t, new RegistrySweeper(mysqlFor(ctx.config.mysql, 'tailer'), ctx.config.registry, ctx.logger.child({ c: 'registry-sweeper' })));
      return t;
    },
  };
}

const daemon = (ctx: Context, specs: ComponentSpec[]) => runDaemon(specs, ctx.logger, { heapGrowingPercent: ctx.config.memory.heapGrowingPercent });

export function runAll(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  return daemon(ctx, [...workersFor(ctx, Object.keys(ctx.config.datacenters)), tailer(ctx, opts.resetCheckpoint ?? false)]);
}

export function runTailer(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  return daemon(ctx, [tailer(ctx, opts.resetCheckpoint ?? false)]);
}

export function runWorkers(ctx: Context, dcs: string[]): Promise<number> {
  return daemon(ctx, workersFor(ctx, dcs));
}
