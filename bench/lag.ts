/** Live lag: commit → visible on every server at steady source rates, and what BullMQ costs at them. */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import mysql from 'mysql2/promise';
import { measureBullmq } from './bullmq-cost.js';
import { watchForRegressions } from '../test/helpers/regression-watcher.js';
import { sleep } from '../scripts/harness.js';
import { MemcachedTextClient } from '../scripts/memcached-text.js';
import { say, fmt, ms, type Ctx, NS, dropPrefix } from './context.js';
import { type Measured, cpuNow, cpuShare, stackCpu } from './pipeline.js';

export interface LagResult {
  target: number | 'max';
  achieved: number;
  probes: number;
  p50: number;
  p99: number;
  max: number;
  lost: number;
  /** Commit → visible on every server of each data center. */
  perDc: { dc: string; p50: number; p99: number; max: number }[];
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * A steady load of CALL set_key (per-key increasing values, each connection its own keys) plus
 * a prober: every 20 ms it sets a key of its own, and from the moment the CALL returns it reads
 * every server with a plain text-protocol client until all of them show the value.
 */
export async function lag(ctx: Ctx, tag: string, target: number | 'max', seconds: number, loadKeys: (c: number) => string[]): Promise<LagResult> {
  // A CALL takes a few ms once the machine is busy: enough connections that pacing, not
  // latency, sets the rate.
  const connections = target === 'max' ? 8 : Math.max(1, Math.ceil(target / 250));
  const conns = await Promise.all(Array.from({ length: connections }, () => mysql.createConnection(ctx.writer)));
  const probeConn = await mysql.createConnection(ctx.writer);
  const clients = ctx.servers.map((s) => new MemcachedTextClient(s, 5_000));
  const end = Date.now() + seconds * 1000;
  const warmUntil = Date.now() + 1_000;
  const pad = 'l'.repeat(Math.max(0, ctx.opts.valueBytes - 12));
  let calls = 0;
  let seq = 0;
  const probeInterval = 20;
  // The prober's own writes count in the rate.
  const loadRate = target === 'max' ? Infinity : Math.max(1, target - 1000 / probeInterval);
  const interval = (1000 * connections) / loadRate;
  const started = performance.now();
  const load = conns.map(async (c, ci) => {
    const keys = loadKeys(ci);
    let next = performance.now();
    for (let j = 0; Date.now() < end; j++) {
      if (Number.isFinite(interval)) {
        next += interval;
        const wait = next - performance.now();
        if (wait > 1) await sleep(wait);
      }
      await c.query('CALL set_key(?, ?, ?, 0)', [NS.lag, keys[j % keys.length]!, `${++seq}:${pad}`]);
      calls++;
    }
  });
  const lags: number[] = [];
  const groups = Object.entries(ctx.config.datacenters).map(([dc, d]) => ({ dc, servers: d.servers.map((a) => ctx.servers.indexOf(a)), lags: [] as number[] }));
  let lost = 0;
  const prober = (async () => {
    for (let n = 0; Date.now() < end; n++) {
      const slot = performance.now() + probeInterval;
      const key = `probe:${ctx.runId}:${tag}:${String(target)}:${n}`;
      const value = `p${n}`;
      await probeConn.query('CALL set_key(?, ?, ?, 0)', [NS.lag, key, value]);
      calls++;
      const committed = performance.now();
      const pending = new Set(clients.keys());
      const seen: number[] = [];
      const deadline = committed + 5_000;
      while (pending.size > 0 && performance.now() < deadline) {
        for (const i of [...pending]) {
          if ((await clients[i]!.get(key))?.value.toString() !== value) continue;
          pending.delete(i);
          seen[i] = performance.now() - committed;
        }
        if (pending.size > 0) await sleep(1);
      }
      if (pending.size > 0) lost++;
      else if (Date.now() > warmUntil) {
        lags.push(performance.now() - committed);
        for (const g of groups) g.lags.push(Math.max(...g.servers.map((i) => seen[i]!)));
      }
      const wait = slot - performance.now();
      if (wait > 0) await sleep(wait);
    }
  })();
  await Promise.all([...load, prober]);
  const achieved = calls / ((performance.now() - started) / 1000);
  await Promise.all([...conns, probeConn].map((c) => c.end()));
  for (const c of clients) c.close();
  lags.sort((a, b) => a - b);
  const perDc = groups.map((g) => {
    g.lags.sort((a, b) => a - b);
    return { dc: g.dc, p50: percentile(g.lags, 50), p99: percentile(g.lags, 99), max: g.lags.at(-1) ?? NaN };
  });
  return { target, achieved, probes: lags.length, p50: percentile(lags, 50), p99: percentile(lags, 99), max: lags[lags.length - 1] ?? NaN, lost, perDc };
}

export interface LagSeries {
  rows: LagResult[];
  /** Jobs added per second to each data center's queues at each rate (mcrepl only). */
  jobsPerSec: number[];
  cpuShares: Map<string, number>[];
  regressions: number;
  observations: number;
  watched: number;
}

/**
 * The lag probe at each of `--lag-rates`, with the per-key order watched on every server
 * meanwhile (values carry a sequence) and the CPU share of `procs`, the servers and the load.
 */
export async function lagSeries(ctx: Ctx, tag: string, procs: Measured[], jobsAdded?: () => Promise<number>): Promise<LagSeries> {
  const series: LagSeries = { rows: [], jobsPerSec: [], cpuShares: [], regressions: 0, observations: 0, watched: 0 };
  const watchKeys: string[] = [];
  const loadKeys = (rateTag: string) => (c: number) => {
    // The run's id in every key: the servers may still hold keys of an earlier run.
    const keys = Array.from({ length: 500 }, (_, j) => `o:${ctx.runId}:${tag}:${rateTag}:${c}:${j}`);
    if (watchKeys.length < 80) watchKeys.push(...keys.slice(0, 10));
    return keys;
  };
  for (const r of ctx.opts.lagRates) {
    say(`lag (${tag}): ${String(r)} rows/s for ${ctx.opts.lagSeconds} s`);
    watchKeys.length = 0;
    const keysFor = loadKeys(String(r));
    for (let c = 0; c < 8; c++) keysFor(c);
    const watcher = watchForRegressions(ctx.servers, watchKeys, (v) => Number(v.split(':')[0]), 10);
    const cpu0 = cpuNow(procs);
    const jobs0 = await jobsAdded?.();
    const t0 = performance.now();
    const res = await lag(ctx, tag, r, ctx.opts.lagSeconds, keysFor);
    const seconds = (performance.now() - t0) / 1000;
    series.cpuShares.push(cpuShare(cpu0, cpuNow(procs), seconds));
    if (jobsAdded && jobs0 !== undefined) series.jobsPerSec.push(((await jobsAdded()) - jobs0) / seconds);
    const w = await watcher.stop();
    series.regressions += w.regressions.length;
    for (const line of w.regressions.slice(0, 5)) say(`  ORDER REGRESSION ${line}`);
    series.observations += w.observations;
    series.watched = watchKeys.length;
    say(`lag (${tag}) at ${String(r)}: ${fmt(res.achieved)} rows/s, p50 ${ms(res.p50)}, p99 ${ms(res.p99)}, max ${ms(res.max)} (${res.probes} probes${series.jobsPerSec.length ? `, ${fmt(series.jobsPerSec.at(-1)!)} jobs/s per data center` : ''})`);
    series.rows.push(res);
  }
  return series;
}

/** The lag table and the CPU table of a series. */
export function lagTables(series: LagSeries): string[] {
  const names = [...series.cpuShares[0]!.keys()];
  const jobs = series.jobsPerSec.length === series.rows.length;
  return [
    `| source rate | achieved | probes | p50 | p99 | max | not seen in 5 s |${jobs ? ' jobs/s per data center |' : ''}`,
    `|---|---:|---:|---:|---:|---:|---:|${jobs ? '---:|' : ''}`,
    ...series.rows.map((r, i) => `| ${r.target === 'max' ? 'max (8 connections)' : `${fmt(r.target)} rows/s`} | ${fmt(r.achieved)} rows/s | ${r.probes} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.max)} | ${r.lost} |${jobs ? ` ${fmt(series.jobsPerSec[i]!)} |` : ''}`),
    '',
    `Where the CPU went at each rate (share of one core, averaged over the run; the machine has ${os.cpus().length}):`,
    '',
    `| source rate | ${names.join(' | ')} | total |`,
    `|---|${names.map(() => '---:|').join('')}---:|`,
    ...series.rows.map((r, i) => {
      const share = series.cpuShares[i]!;
      const total = [...share.values()].reduce((a, b) => a + b, 0);
      return `| ${r.target === 'max' ? 'max' : fmt(r.target)} | ${[...share.values()].map((v) => `${fmt(v * 100)} %`).join(' | ')} | ${fmt(total * 100)} % |`;
    }),
    '',
  ];
}

/**
 * BullMQ alone (bench/bullmq-cost.ts) at the job rate of one data center's queue in each lag run
 * that has one, against the CPU mcrepl's processes and Redis used at that rate.
 */
export async function bullmqCost(ctx: Ctx, series: LagSeries): Promise<string[]> {
  const dcs = Object.keys(ctx.config.datacenters).length;
  const rows: string[] = [];
  for (const [i, r] of series.rows.entries()) {
    const jobsPerSec = series.jobsPerSec[i];
    if (jobsPerSec === undefined || !(jobsPerSec >= 1)) continue;
    // An inline job carries its ops base64: ~19 bytes of header per op, key and value.
    const opsPerJob = r.achieved / jobsPerSec;
    const jobBytes = Math.round((opsPerJob * (19 + 40 + ctx.opts.valueBytes) * 4) / 3);
    say(`BullMQ alone: ${fmt(jobsPerSec)} jobs/s of ${fmt(jobBytes)} bytes, no-op processor, 10 s`);
    let redis0 = 0;
    const redisCpu = () => stackCpu().get('redis') ?? 0;
    const res = await measureBullmq({ redis: ctx.config.redis, prefix: `bench-${ctx.runId}-bullmq`, jobsPerSec, seconds: 10, jobBytes }, () => (redis0 = redisCpu()));
    const redisSeconds = redisCpu() - redis0;
    await dropPrefix(ctx.redis, `bench-${ctx.runId}-bullmq`);
    const perJob = (1000 * res.cpuSeconds) / res.jobs;
    const redisPerJob = (1000 * redisSeconds) / res.jobs;
    const share = series.cpuShares[i]!;
    const ours = ['tailer', ...Object.keys(ctx.config.datacenters).map((dc) => `worker-${dc}`), 'redis'].reduce((a, k) => a + (share.get(k) ?? 0), 0);
    rows.push(
      `| ${r.target === 'max' ? 'max' : fmt(r.target)} | ${fmt(jobsPerSec)} | ${fmt(perJob, 2)} ms | ${fmt(redisPerJob, 2)} ms | ${fmt(((perJob + redisPerJob) * jobsPerSec * dcs) / 10)} % | ${fmt(ours * 100)} % |`,
    );
  }
  if (rows.length === 0) return [];
  return [
    '### What BullMQ itself costs per job at these rates',
    '',
    `\`bench/bullmq-cost.ts\`: one process adds jobs of the same size to one queue at the rate of one data center's queue above and runs them with a BullMQ Worker whose processor does nothing (10 s after 2 s of warm-up); its CPU and Redis's per job, then what that makes for ${dcs} data centers (one queue and one worker each), beside what mcrepl's tailer, workers and Redis used at that rate (which also read the binlog, write memcached and record progress).`,
    '',
    `| source rate | jobs/s per data center | BullMQ client CPU per job (add + run) | Redis CPU per job | BullMQ alone, ${dcs} data centers (share of one core) | mcrepl tailer + workers + Redis |`,
    '|---|---:|---:|---:|---:|---:|',
    ...rows,
    '',
  ];
}
