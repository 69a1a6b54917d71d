/** `mcrepl run`, `mcrepl tailer`, `mcrepl worker <dc>`. */
import { ConfigError } from '../../errors.js';
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
  // A replacement never resets again: it resumes from what its predecessor saved.
  return { name: 'tailer', create: (attempt) => new Tailer(ctx.config, { logger: ctx.logger.child({ c: 'tailer' }), resetCheckpoint: resetCheckpoint && attempt === 0 }) };
}

const daemon = (ctx: Context, specs: ComponentSpec[]) => runDaemon(specs, ctx.logger, { gcAboveMb: ctx.config.memory.gcAboveMb });

export function runAll(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  return daemon(ctx, [...workersFor(ctx, Object.keys(ctx.config.datacenters)), tailer(ctx, opts.resetCheckpoint ?? false)]);
}

export function runTailer(ctx: Context, opts: { resetCheckpoint?: boolean }): Promise<number> {
  return daemon(ctx, [tailer(ctx, opts.resetCheckpoint ?? false)]);
}

export function runWorkers(ctx: Context, dcs: string[]): Promise<number> {
  return daemon(ctx, workersFor(ctx, dcs));
}
