/** The drain: a backlog applied by the real processes; the tailer alone and the workers alone. */
import { performance } from 'node:perf_hooks';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { type Checkpoint, type Position } from '../src/source/checkpoint-store.js';
import { Proc, sleep } from '../scripts/harness.js';
import { say, fmt, type Ctx, pipelineConfig, waitForMarker, usedMemory, dropPrefix } from './context.js';
import { type DrainResult, stackCpu, pipelineProcs, whenKey, startFrom } from './pipeline.js';

export async function drain(ctx: Ctx, writer: 'meta' | 'memjs', from: Position, marker: { flushId: number; token: string }, keep: boolean, tag = `drain-${writer}`): Promise<DrainResult & { stop: () => Promise<void>; file: string; keys: RedisKeys; procs: Proc[] }> {
  const p = pipelineConfig(ctx, tag, writer);
  await startFrom(ctx, p.keys, from);
  const { tailer, workers } = pipelineProcs(ctx, p.file, tag);
  const all = [tailer, ...workers];
  // The clock starts once the processes are up (their leases taken): loading Node modules
  // and connecting take 1-2 s here, the same for any backlog, and the naive baseline and the
  // ceilings run inside this process, without that cost. It is reported beside the rate.
  const spawned = performance.now();
  for (const w of workers) w.start();
  await Promise.all(Object.keys(ctx.config.datacenters).map((dc) => whenKey(ctx.redis, p.keys.workerLease(dc))));
  tailer.start();
  await whenKey(ctx.redis, p.keys.tailerLease);
  const started = performance.now();
  const startupSeconds = (started - spawned) / 1000;
  const cpuBefore = stackCpu();
  const procCpuBefore = all.map((x) => x.usage()?.cpuSeconds ?? 0);
  let lastReport = Date.now();
  const progress = async () => {
    if (Date.now() - lastReport < 5_000) return;
    lastReport = Date.now();
    const cp = JSON.parse((await ctx.redis.get(p.keys.checkpoint)) ?? '{}') as Checkpoint;
    const behind = await Promise.all(
      Object.keys(ctx.config.datacenters).map(async (dc) => {
        const w = Object.values(await ctx.redis.hgetall(p.keys.applied(dc))).map((v) => Number(v.split(':').at(-1)));
        return `${dc} at t ${w.length ? Math.min(...w) : 0}`;
      }),
    );
    say(`  ${writer}: ${fmt((performance.now() - started) / 1000)} s, tailer at t ${cp.txnSeq}, ${behind.join(', ')} (lowest partition)`);
  };
  const ok = await waitForMarker(ctx, p.keys, marker, 600_000, () => void progress());
  const seconds = (performance.now() - started) / 1000;
  if (!ok) throw new Error(`the ${writer} drain did not finish in 10 minutes; logs in ${ctx.logDir}`);
  const usage = all.map((x, i) => {
    const u = x.usage() ?? { peakRssBytes: 0, cpuSeconds: 0 };
    return { name: x.name.replace(`${tag}-`, ''), peakRssBytes: u.peakRssBytes, cpuSeconds: u.cpuSeconds - procCpuBefore[i]! };
  });
  const servers = [...stackCpu()].map(([name, cpu]) => ({ name, cpuSeconds: cpu - (cpuBefore.get(name) ?? 0) }));
  const cp = JSON.parse((await ctx.redis.get(p.keys.checkpoint)) ?? '{}') as Checkpoint;
  const stop = async () => {
    await Promise.all(all.map((x) => x.kill('SIGTERM')));
    await dropPrefix(ctx.redis, p.config.redis.prefix);
  };
  if (!keep) await stop();
  return { writer, seconds, startupSeconds, rowsPerSec: ctx.opts.rows / seconds, usage, servers, txnSeq: cp.txnSeq, stop, file: p.file, keys: p.keys, procs: all };
}

/** The tailer alone (jobs pile up in Redis), then the workers alone (they drain them). */
export async function stages(ctx: Ctx, from: Position, marker: { flushId: number; token: string }, finalTxnSeq: number): Promise<{ tailerRowsPerSec: number; workersRowsPerSec: number; redisBytesPerOp: number; tailerRss: number }> {
  const p = pipelineConfig(ctx, 'stages');
  await startFrom(ctx, p.keys, from);
  const { tailer, workers } = pipelineProcs(ctx, p.file, 'stages');
  const before = await usedMemory(ctx.redis);
  tailer.start();
  await whenKey(ctx.redis, p.keys.tailerLease);
  let started = performance.now();
  for (;;) {
    const cp = JSON.parse((await ctx.redis.get(p.keys.checkpoint)) ?? '{}') as Checkpoint;
    if (cp.txnSeq >= finalTxnSeq) break;
    if (performance.now() - started > 600_000) throw new Error('the tailer alone did not finish in 10 minutes');
    await sleep(20);
  }
  const tailerSeconds = (performance.now() - started) / 1000;
  const tailerRss = tailer.usage()?.peakRssBytes ?? 0;
  const queued = (await usedMemory(ctx.redis)) - before;
  await tailer.kill('SIGTERM');
  for (const w of workers) w.start();
  await Promise.all(Object.keys(ctx.config.datacenters).map((dc) => whenKey(ctx.redis, p.keys.workerLease(dc))));
  started = performance.now();
  const ok = await waitForMarker(ctx, p.keys, marker, 600_000);
  const workersSeconds = (performance.now() - started) / 1000;
  await Promise.all(workers.map((w) => w.kill('SIGTERM')));
  await dropPrefix(ctx.redis, p.config.redis.prefix);
  if (!ok) throw new Error('the workers alone did not finish in 10 minutes');
  const dcs = Object.keys(ctx.config.datacenters).length;
  return { tailerRowsPerSec: ctx.opts.rows / tailerSeconds, workersRowsPerSec: ctx.opts.rows / workersSeconds, redisBytesPerOp: queued / (ctx.opts.rows * dcs), tailerRss };
}
