/** A data center far from Redis: lag per data center behind a latency proxy. */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { redisOptions } from '../src/coordination/redis.js';
import { connectMysql } from '../src/registry/mysql.js';
import { currentBinlogPosition } from '../src/source/position.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { Proc, sleep } from '../scripts/harness.js';
import { LatencyProxyProcess } from '../scripts/latency-proxy.js';
import { say, fmt, type Ctx, pipelineConfig, dropPrefix } from './context.js';
import { whenKey, startFrom } from './pipeline.js';
import { type LagResult, lag } from './lag.js';

export interface DistanceResult {
  rttMs: number;
  /** The data center behind the proxy. */
  far: string;
  lag: LagResult;
  /** Jobs waiting in the far data center's queues: the most seen (sampled every 100 ms), and at the end. */
  maxQueued: number;
  queuedAtEnd: number;
  /** The round trip through the proxy as measured (PING), ms. */
  measuredRttMs: number;
}

/**
 * Distance inside a site: the last data center's worker group reaches Redis through a latency
 * proxy (scripts/latency-proxy.ts: `rttMs` more per round trip); the tailer and the other
 * groups are next to it. The lag probe runs at --distance-rate, per data center, while the far
 * data center's queue is sampled.
 */
export async function distance(ctx: Ctx, rttMs: number): Promise<DistanceResult> {
  const tag = `distance-${rttMs}`;
  const p = pipelineConfig(ctx, tag);
  const dcs = Object.keys(ctx.config.datacenters);
  const far = dcs.at(-1)!;
  const proxy = new LatencyProxyProcess({ targetPort: p.config.redis.port, targetHost: p.config.redis.host, delayMs: rttMs / 2 });
  await proxy.start();
  const farFile = writeConfigFile({ ...p.config, redis: { ...p.config.redis, host: '127.0.0.1', port: proxy.port } });
  {
    const conn = await connectMysql(ctx.config.mysql);
    try {
      await startFrom(ctx, p.keys, await currentBinlogPosition(conn));
    } finally {
      await conn.end();
    }
  }
  const node = [...ctx.opts.nodeOption];
  const procs = [
    ...dcs.map((dc) => new Proc(`${tag}-worker-${dc}`, ['-c', dc === far ? farFile : p.file, 'worker', dc], ctx.logDir, node)),
    new Proc(`${tag}-tailer`, ['-c', p.file, 'tailer'], ctx.logDir, node),
  ];
  try {
    for (const x of procs) x.start();
    await Promise.all([...dcs.map((dc) => whenKey(ctx.redis, p.keys.workerLease(dc))), whenKey(ctx.redis, p.keys.tailerLease)]);
    const viaProxy = new Redis({ ...redisOptions(p.config.redis), host: '127.0.0.1', port: proxy.port, lazyConnect: true });
    await viaProxy.connect();
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) await viaProxy.ping();
    const measuredRttMs = (performance.now() - t0) / 5;
    viaProxy.disconnect();
    let maxQueued = 0;
    const queued = async () => {
      let n = 0;
      for (let q = 0; q < ctx.config.partitions; q++) n += await ctx.redis.llen(p.keys.queueKey(far, q, 'wait'));
      return n;
    };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxQueued = Math.max(maxQueued, await queued());
        await sleep(100);
      }
    })();
    say(`distance: ${far}'s workers ${rttMs} ms from Redis (measured ${fmt(measuredRttMs, 1)} ms), ${fmt(ctx.opts.distanceRate)} rows/s for ${ctx.opts.lagSeconds} s`);
    const keys = (c: number) => Array.from({ length: 500 }, (_, j) => `d:${ctx.runId}:${rttMs}:${c}:${j}`);
    const lagResult = await lag(ctx, tag, ctx.opts.distanceRate, ctx.opts.lagSeconds, keys);
    sampling = false;
    await sampler;
    const queuedAtEnd = await queued();
    return { rttMs, far, lag: lagResult, maxQueued, queuedAtEnd, measuredRttMs };
  } finally {
    await Promise.all(procs.map((x) => x.kill('SIGTERM')));
    await proxy.stop();
    await dropPrefix(ctx.redis, p.config.redis.prefix);
  }
}
