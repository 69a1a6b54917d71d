/**
 * `npm run bench`: mcrepl's speed and memory next to the limits of the machine it runs on,
 * every number measured in the same run, on the local stack (two data centers × two memcached
 * servers; started if it is not running, and stopped again afterwards).
 *
 *   ceilings   zongji parsing the backlog and nothing else; raw pipelined memcached sets to the
 *              four servers at once; MySQL writing the workload (bulk INSERT, and CALL set_key)
 *   naive      bench/naive.ts: one BullMQ job per row per data center, memjs
 *   drain      a backlog of --rows set ops (--value-bytes values over --keys keys) written while
 *              the pipeline is stopped, then applied to all four servers by the real CLI
 *              processes (a tailer, one worker group per data center), per writer; peak RSS
 *              and CPU of each process; the tailer alone and the workers alone; Redis bytes
 *              per queued op
 *   ketama     the same backlog into one data center of three servers of its own: replicate,
 *              then ketama with replicas 1 and 2 (each key checked on the servers it belongs on)
 *   lag        commit → visible on every server, p50/p99/max, at steady source rates, read
 *              by a prober with a plain text-protocol client; per-key order watched meanwhile
 *              and every key checked against MySQL afterwards (the chaos run's checker); then
 *              the same probe with mcrepl stopped against bench/floor.ts (the binlog written
 *              straight to memcached: the lag floor of this machine)
 *   bulk       one transaction of --bulk-rows rows (INSERT … SELECT from a sequence), applied by
 *              the drain's processes (kept running): commit → the last key on every server,
 *              every partition done, a sample of the keys read back; peak RSS of each process
 *              during it, lease losses and restarts from their logs; against the drain's time
 *   distance   the last data center's worker group behind a latency proxy to Redis (--redis-rtt,
 *              scripts/latency-proxy.ts): lag per data center and its queue at --distance-rate
 *   wan        two sites across a simulated WAN (scripts/wan.ts, as `npm run wan`): per-site lag at
 *              --distance-rate, a --wan-cut of west, its catch-up, the checker
 *   flush      `mcrepl flush` of namespaces of --flush-keys keys, until gone from every server
 *
 * It prints a table and writes it to docs/BENCHMARKS.md (--out) with the date and the machine.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import ZongJi, { type AnyBinlogEvent, type RowsEvent } from '@vlasky/zongji';
import { Command, InvalidArgumentError } from 'commander';
import { Redis } from 'ioredis';
import mysql, { type Connection, type RowDataPacket } from 'mysql2/promise';
import { runNaive } from '../bench/naive.js';
import { startFloor } from '../bench/floor.js';
import { measureBullmq } from '../bench/bullmq-cost.js';
import { loadConfig } from '../src/config/load.js';
import { datacenterSchema, serversOf, type ResolvedConfig } from '../src/config/schema.js';
import { redisOptions } from '../src/coordination/redis.js';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { connectMysql } from '../src/registry/mysql.js';
import { installAll } from '../src/registry/schema-installer.js';
import { RedisCheckpointStore, type Checkpoint, type Position } from '../src/source/checkpoint-store.js';
import { currentBinlogPosition } from '../src/source/position.js';
import { watchForRegressions } from '../test/helpers/regression-watcher.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { PrivateMemcached } from '../test/helpers/memcached-server.js';
import { check, cpuSecondsOf, holdsOf, Proc, sleep } from './harness.js';
import { LatencyProxyProcess } from './latency-proxy.js';
import { runWan, wanReport } from './wan.js';
import { MemcachedTextClient } from './memcached-text.js';
import { down, repoRoot, stackEnv, stackLayout, status, up } from './stack.js';

// ---------------------------------------------------------------------------------------------
// Options

const count = (v: string): number => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number greater than 0');
  return n;
};
const count0 = (v: string): number => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number (0 to skip)');
  return n;
};
const list = <T>(parse: (s: string) => T) => (v: string): T[] => v.split(',').map((s) => parse(s.trim()));
const rate = (s: string): number | 'max' => (s === 'max' ? 'max' : count(s));
const SECTIONS = ['ceilings', 'naive', 'drain', 'ketama', 'bulk', 'lag', 'distance', 'wan', 'flush'] as const;
type Section = (typeof SECTIONS)[number];

const program = new Command()
  .name('npm run bench --')
  .description('Measure mcrepl against the limits of this machine, on the local stack; print a table and write it to docs/BENCHMARKS.md.')
  .option('--rows <n>', 'set ops in the drain backlog', count, 1_000_000)
  .option('--keys <n>', 'distinct keys in the backlog', count, 100_000)
  .option('--value-bytes <n>', 'value size of the backlog', count, 100)
  .option('--backlog-txn-rows <n>', 'rows per transaction of the backlog (1: one row per transaction, as a site catching up after a cut reads it)', count, 1000)
  .option('--naive-rows <n>', 'rows the naive baseline applies (it is slow)', count, 20_000)
  .option('--writers <list>', 'memcached writers to drain with, side by side', list((s) => s as 'meta' | 'memjs'), ['meta', 'memjs'])
  .option('--bulk-rows <n>', 'rows of the one large transaction (0 skips it)', count0, 1_000_000)
  .option('--lag-rates <list>', "source rates for the lag probe, rows/s; 'max' = as fast as the source goes", list(rate), [500, 2000, 'max'])
  .option('--lag-seconds <n>', 'how long each lag rate runs', count, 20)
  .option('--redis-rtt <list>', "round trips (ms) between the last data center's worker group and Redis, one distance run each", list(count0), [2, 80])
  .option('--distance-rate <n>', 'source rate of the distance runs, rows/s', count, 2000)
  .option('--wan-rtt <ms>', 'round trip between the two sites of the wan section (npm run wan)', count, 80)
  .option('--wan-cut <seconds>', 'how long the wan section cuts west off', count, 120)
  .option('--flush-keys <list>', 'namespace sizes to flush', list(count), [100_000, 1_000_000])
  .option('--only <sections>', `run only these sections (${SECTIONS.join(', ')})`, list((s) => s as Section))
  .option('--set <path=value>', 'a config override for every pipeline of the run, e.g. --set partitions=4 --set tailer.lingerMs=2 (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--out <file>', 'markdown file the table is written to', 'docs/BENCHMARKS.md')
  .option('--no-write', 'print the table only')
  .option('--profile', 'run the drain\'s processes under the V8 CPU profiler and add each one\'s top functions to the report')
  .option('--node-option <flag>', 'a node option for the pipeline\'s processes, e.g. --node-option=--trace-gc (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .addHelpText('after', '\nDefaults take about 11 minutes on a 2-core machine (the INSERT of the bulk transaction alone takes 1-2 minutes of MySQL). Exit code 0 when every section ran (targets missed are reported, not fatal).');

interface Options {
  rows: number;
  keys: number;
  valueBytes: number;
  backlogTxnRows: number;
  naiveRows: number;
  bulkRows: number;
  writers: ('meta' | 'memjs')[];
  lagRates: (number | 'max')[];
  lagSeconds: number;
  redisRtt: number[];
  distanceRate: number;
  wanRtt: number;
  wanCut: number;
  flushKeys: number[];
  only?: Section[];
  out: string;
  write: boolean;
  profile?: boolean;
  nodeOption: string[];
  set: string[];
}

const t0 = Date.now();
const say = (msg: string) => process.stdout.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const mb = (bytes: number) => `${fmt(bytes / 1024 / 1024)} MB`;
const ms = (x: number) => `${fmt(x, x < 10 ? 1 : 0)} ms`;

// ---------------------------------------------------------------------------------------------
// The run's private corner of the stack

interface Ctx {
  opts: Options;
  config: ResolvedConfig;
  database: string;
  servers: string[];
  /** The applications' account, the operators' account. */
  writer: mysql.ConnectionOptions;
  admin: mysql.ConnectionOptions;
  redis: Redis;
  logDir: string;
  runId: string;
}

function accountOpts(config: ResolvedConfig, role: 'writer' | 'admin' | 'tailer'): mysql.ConnectionOptions {
  const c = mysqlFor(config.mysql, role);
  return { host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database };
}

let pipelines = 0;

/** A config for one pipeline of this run: its own Redis prefix (queues, checkpoint). */
function pipelineConfig(ctx: Ctx, name: string, writer: 'meta' | 'memjs' | 'auto' = 'auto'): { config: ResolvedConfig; file: string; keys: RedisKeys } {
  // Its own server_id too: two binlog readers with one id make the server drop the older one.
  const config: ResolvedConfig = {
    ...ctx.config,
    mysql: { ...ctx.config.mysql, serverId: ctx.config.mysql.serverId + ++pipelines },
    redis: { ...ctx.config.redis, prefix: `bench-${ctx.runId}-${name}` },
    memcached: { ...ctx.config.memcached, writer },
  };
  return { config, file: writeConfigFile(config), keys: new RedisKeys(config.redis.prefix) };
}

const NS = { backlog: 1, lag: 2, end: 9, bulk: 50 } as const;

/** Writes rows with multi-row INSERTs (`perTxn` rows each, autocommit) over `connections` connections. */
async function insertRows(ctx: Ctx, total: number, row: (i: number) => [number, string, string, number], connections = 2, perTxn = 1000): Promise<number> {
  const conns = await Promise.all(Array.from({ length: connections }, () => mysql.createConnection(ctx.writer)));
  let next = 0;
  const started = performance.now();
  await Promise.all(
    conns.map(async (c) => {
      for (;;) {
        const from = next;
        if (from >= total) return;
        next += perTxn;
        const rows: [number, string, string, number][] = [];
        for (let i = from; i < Math.min(total, from + perTxn); i++) rows.push(row(i));
        await c.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [rows]);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(conns.map((c) => c.end()));
  return total / seconds;
}

/** A flush of the empty namespace `end`: a marker in every partition, after everything before it. */
async function endMarker(ctx: Ctx): Promise<{ flushId: number; token: string }> {
  const c = await mysql.createConnection(ctx.admin);
  try {
    const [sets] = await c.query<RowDataPacket[][]>('CALL flush_namespace(?)', [NS.end]);
    const r = sets[0]![0]!;
    return { flushId: Number(r.flush_id), token: String(r.token) };
  } finally {
    await c.end();
  }
}

/** Waits until every partition of every data center applied the marker; seconds waited. */
async function waitForMarker(ctx: Ctx, keys: RedisKeys, marker: { flushId: number; token: string }, timeoutMs: number, onTick?: () => void): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    onTick?.();
    const done = await Promise.all(Object.keys(ctx.config.datacenters).map((dc) => ctx.redis.scard(keys.flushDone(marker.flushId, marker.token, dc))));
    if (done.every((n) => n >= ctx.config.partitions)) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

/**
 * Waits until a server is idle (under a tenth of a core for a second; at most 2 minutes): after
 * a million-row write InnoDB keeps purging and flushing for a while, which is not the pipeline's
 * cost.
 */
async function settle(name: string, pid: number | undefined): Promise<void> {
  if (pid === undefined) return;
  const started = Date.now();
  let before = cpuSecondsOf(pid);
  while (Date.now() - started < 120_000) {
    await sleep(1_000);
    const now = cpuSecondsOf(pid);
    if (now - before < 0.1) break;
    before = now;
  }
  say(`${name} idle after ${fmt((Date.now() - started) / 1000)} s`);
}

// ---------------------------------------------------------------------------------------------
// Ceilings

async function zongjiCeiling(ctx: Ctx, from: Position, rows: number): Promise<number> {
  const acc = mysqlFor(ctx.config.mysql, 'tailer');
  const z = new ZongJi({ host: acc.host, port: acc.port, user: acc.user, password: acc.password, charset: 'utf8mb4' });
  let n = 0;
  const started = performance.now();
  const seconds = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`zongji read only ${n} of ${rows} rows in 5 minutes`)), 300_000);
    z.on('binlog', (e: AnyBinlogEvent) => {
      if (e.getEventName() !== 'writerows') return;
      n += (e as RowsEvent & { rows: unknown[] }).rows.length;
      if (n >= rows) {
        clearTimeout(timer);
        resolve((performance.now() - started) / 1000);
      }
    });
    z.on('error', reject);
    z.start({
      serverId: ctx.config.mysql.serverId + 100,
      includeEvents: ['tablemap', 'writerows', 'xid', 'query', 'gtid', 'mariadbgtid', 'rotate', 'format'],
      includeSchema: { [ctx.database]: ['mc_storage'] },
      ...(from.gtidSet ? { gtidSet: from.gtidSet } : { filename: from.file, position: from.pos }),
    });
  });
  z.stop();
  return rows / seconds;
}

/** Pipelined `ms` requests, prebuilt, to every server at once; sets per second over all. */
async function memcachedCeiling(servers: string[], perServer: number, valueBytes: number): Promise<number> {
  const value = 'r'.repeat(valueBytes);
  const chunkOps = 10_000;
  const chunk = Buffer.from(Array.from({ length: chunkOps }, (_, i) => `ms raw:${i} ${valueBytes} T60\r\n${value}\r\n`).join(''));
  const started = performance.now();
  await Promise.all(
    servers.map(
      (address) =>
        new Promise<void>((resolve, reject) => {
          const i = address.lastIndexOf(':');
          const s = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
          const want = Math.ceil(perServer / chunkOps) * chunkOps * 4; // "HD\r\n" per request
          let got = 0;
          let tail = '';
          s.setNoDelay(true);
          s.on('data', (d: Buffer) => {
            got += d.length;
            tail = (tail + d.toString('latin1', Math.max(0, d.length - 8))).slice(-8);
            if (got >= want) {
              s.destroy();
              if (got === want && tail.endsWith('HD\r\n')) resolve();
              else reject(new Error(`${address}: unexpected replies to the raw sets`));
            }
          });
          s.on('error', reject);
          s.once('connect', async () => {
            for (let sent = 0; sent < perServer; sent += chunkOps) {
              if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
            }
          });
        }),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  return (Math.ceil(perServer / chunkOps) * chunkOps * servers.length) / seconds;
}

/** CALL set_key as fast as `connections` autocommit connections go, for `seconds`. */
async function setKeyRate(ctx: Ctx, connections: number, seconds: number): Promise<number> {
  const conns = await Promise.all(Array.from({ length: connections }, () => mysql.createConnection(ctx.writer)));
  const end = Date.now() + seconds * 1000;
  let calls = 0;
  const value = 'm'.repeat(ctx.opts.valueBytes);
  const started = performance.now();
  await Promise.all(
    conns.map(async (c, ci) => {
      for (let j = 0; Date.now() < end; j++) {
        await c.query('CALL set_key(?, ?, ?, 0)', [NS.lag, `max:${ci}:${j % 1000}`, value]);
        calls++;
      }
    }),
  );
  const rate = calls / ((performance.now() - started) / 1000);
  await Promise.all(conns.map((c) => c.end()));
  return rate;
}

// ---------------------------------------------------------------------------------------------
// Drain

interface ProcUsage {
  name: string;
  peakRssBytes: number;
  cpuSeconds: number;
}

interface DrainResult {
  writer: string;
  /** From the processes being up to the last op applied. */
  seconds: number;
  /** From spawning the processes until they were up (not in `seconds`). */
  startupSeconds: number;
  rowsPerSec: number;
  usage: ProcUsage[];
  /** CPU seconds the stack's servers used during the drain. */
  servers: { name: string; cpuSeconds: number }[];
  txnSeq: number;
}

/** A process whose CPU time is reported. */
interface Measured {
  name: string;
  cpuSeconds: () => number;
}

const measured = (procs: Proc[]): Measured[] => procs.map((p) => ({ name: p.name.replace(/^drain-\w+-/, ''), cpuSeconds: () => p.usage()?.cpuSeconds ?? 0 }));

/** CPU seconds used so far by the pipeline's processes, the stack's servers and this process (the load). */
function cpuNow(procs: Measured[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const p of procs) m.set(p.name, p.cpuSeconds());
  for (const [name, cpu] of stackCpu()) {
    const key = name.startsWith('memcached') ? 'memcached ×4' : name;
    m.set(key, (m.get(key) ?? 0) + cpu);
  }
  const self = process.cpuUsage();
  m.set('load + prober', (self.user + self.system) / 1e6);
  return m;
}

/** Share of one core each used between two samples `seconds` apart. */
function cpuShare(before: Map<string, number>, after: Map<string, number>, seconds: number): Map<string, number> {
  return new Map([...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / seconds]));
}

/** CPU seconds used so far by each server of the stack (MariaDB, Redis, memcached). */
function stackCpu(): Map<string, number> {
  return new Map(status(stackLayout()).flatMap((s) => (s.pid === undefined ? [] : [[s.name, cpuSecondsOf(s.pid)] as [string, number]])));
}

function pipelineProcs(ctx: Ctx, file: string, tag: string): { tailer: Proc; workers: Proc[] } {
  const node = (name: string) => [...ctx.opts.nodeOption, ...(ctx.opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(ctx.logDir, 'prof', name)}`] : [])];
  return {
    tailer: new Proc(`${tag}-tailer`, ['-c', file, 'tailer'], ctx.logDir, node(`${tag}-tailer`)),
    workers: Object.keys(ctx.config.datacenters).map((dc) => new Proc(`${tag}-worker-${dc}`, ['-c', file, 'worker', dc], ctx.logDir, node(`${tag}-worker-${dc}`))),
  };
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  startTime: number;
  endTime: number;
}

/** The functions a V8 CPU profile spent the most self time in. */
function topFunctions(file: string, n = 12): { fn: string; percent: number }[] {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const total = prof.nodes.reduce((a, x) => a + (x.hitCount ?? 0), 0) || 1;
  const by = new Map<string, number>();
  for (const x of prof.nodes) {
    const { functionName, url, lineNumber } = x.callFrame;
    const where = url ? `${url.replace(/^file:\/\//, '').replace(`${repoRoot}/`, '').replace(/^.*node_modules\//, '')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    by.set(key, (by.get(key) ?? 0) + (x.hitCount ?? 0));
  }
  return [...by.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([fn, hits]) => ({ fn, percent: (100 * hits) / total }));
}

function profileReport(ctx: Ctx): string[] {
  const dir = path.join(ctx.logDir, 'prof');
  if (!fs.existsSync(dir)) return [];
  const out = ['## Where the time goes (V8 CPU profiles of the drain, self time)', ''];
  for (const proc of fs.readdirSync(dir).sort()) {
    const files = fs.readdirSync(path.join(dir, proc)).filter((f) => f.endsWith('.cpuprofile'));
    if (!files[0]) continue;
    out.push(`**${proc}**`, '', '| function | self time |', '|---|---:|', ...topFunctions(path.join(dir, proc, files[0])).map((f) => `| \`${f.fn.replace(/\|/g, '\\|')}\` | ${fmt(f.percent, 1)} % |`), '');
  }
  return out;
}

/** Resolves once `key` exists (a process took its lease: it is up). */
async function whenKey(redis: Redis, key: string, timeoutMs = 120_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await redis.exists(key))) {
    if (performance.now() > deadline) throw new Error(`${key} did not appear in ${timeoutMs / 1000} s: a pipeline process did not start (see its log)`);
    await sleep(10);
  }
}

async function startFrom(ctx: Ctx, keys: RedisKeys, from: Position): Promise<void> {
  const cp: Checkpoint = { position: from, txnSeq: 0, epoch: randomUUID(), savedAt: Date.now() };
  await new RedisCheckpointStore(ctx.redis, keys).save(cp);
}

async function drain(ctx: Ctx, writer: 'meta' | 'memjs', from: Position, marker: { flushId: number; token: string }, keep: boolean, tag = `drain-${writer}`): Promise<DrainResult & { stop: () => Promise<void>; file: string; keys: RedisKeys; procs: Proc[] }> {
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

/**
 * The backlog drained into one data center of three servers of its own (private memcached):
 * `replicate` (every key on all three), then `ketama` with replicas 1 and 2 (each key on one or
 * two). Each drain is checked against MySQL, each key on the servers it belongs on.
 */
async function ketamaSection(ctx: Ctx, from: Position, marker: { flushId: number; token: string }): Promise<string[]> {
  const servers = await Promise.all([0, 1, 2].map(() => PrivateMemcached.create()));
  const rows: { label: string; d: DrainResult }[] = [];
  try {
    const variants: { label: string; dc: Record<string, unknown> }[] = [
      { label: 'replicate (every key on all 3)', dc: { servers: servers.map((m) => m.address) } },
      ...[1, 2].map((replicas) => ({ label: `ketama, replicas ${replicas}`, dc: { routing: 'ketama', hash: 'fnv1a_64', replicas, servers: servers.map((m) => `${m.address}:1`) } })),
    ];
    for (const [i, v] of variants.entries()) {
      // Each variant on empty servers.
      await Promise.all(servers.map((m) => m.stop()));
      await Promise.all(servers.map((m) => m.start()));
      const datacenters = { shard: datacenterSchema.parse(v.dc) } as ResolvedConfig['datacenters'];
      const sub: Ctx = { ...ctx, config: { ...ctx.config, datacenters }, servers: servers.map((m) => m.address) };
      say(`ketama: ${fmt(ctx.opts.rows)} rows into one data center of 3 servers, ${v.label}`);
      const d = await drain(sub, 'meta', from, marker, false, `ketama-${i}`);
      const result = await check(ctx.admin, sub.servers, [], { nsId: NS.backlog, holds: holdsOf(datacenters) });
      say(`ketama (${v.label}): ${fmt(d.rowsPerSec)} rows/s; checked ${fmt(result.keysChecked)} keys on their servers: ${result.divergent.size} divergent`);
      if (result.divergent.size > 0) throw new Error(`the ${v.label} drain left ${result.divergent.size} keys different from MySQL`);
      rows.push({ label: v.label, d });
    }
  } finally {
    await Promise.all(servers.map((m) => m.stop()));
  }
  const base = rows[0]!.d;
  return [
    `## Drain into a sharded data center: ${fmt(ctx.opts.rows)} set ops into one data center of 3 servers`,
    '',
    'The drain section\'s backlog, applied by one tailer and one worker group into a data center of three memcached servers of its own (empty for each row, run in the order shown), `meta` writer. `replicate` puts every key on the three; `ketama` (fnv1a_64, equal weights) on its server of the ring and, with replicas 2, on the next one. Each drain is checked against MySQL afterwards, each key on exactly the servers it belongs on.',
    '',
    '| routing | rows/s | × replicate | start | peak RSS tailer / worker | CPU s tailer / worker |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(({ label, d }) => `| ${label} | ${fmt(d.rowsPerSec)} | ${fmt(d.rowsPerSec / base.rowsPerSec, 2)} | ${fmt(d.startupSeconds, 1)} s | ${d.usage.map((u) => mb(u.peakRssBytes)).join(' / ')} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`),
    '',
  ];
}

/** The tailer alone (jobs pile up in Redis), then the workers alone (they drain them). */
async function stages(ctx: Ctx, from: Position, marker: { flushId: number; token: string }, finalTxnSeq: number): Promise<{ tailerRowsPerSec: number; workersRowsPerSec: number; redisBytesPerOp: number; tailerRss: number }> {
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

// ---------------------------------------------------------------------------------------------
// One large transaction

interface BulkResult {
  rows: number;
  /** The INSERT … SELECT, then its COMMIT (MySQL's own time, before the clock starts). */
  insertSeconds: number;
  commitSeconds: number;
  /** From the COMMIT returning to the last key on every server. */
  lastKeySeconds: number;
  /** From the COMMIT returning to every partition of every data center past it (end marker). */
  doneSeconds: number;
  usage: ProcUsage[];
  /** Peak RSS is since the bulk stage began (VmHWM reset), not since the process started. */
  peakSinceReset: boolean;
  sampled: number;
  found: number;
  wrongValue: number;
  /** memcached evictions during the stage, over every server (a server too small for the rows). */
  evictions: number;
  /** Redis memory in use at the most (sampled), above what it used before the stage: the staged chunks. */
  redisPeakBytes: number;
  leaseLost: number;
  restarts: number;
  lateRenewals: number;
  /** Other warnings and errors in the processes' logs, by message. */
  otherLogs: Map<string, number>;
  alive: boolean;
}

/** Sets a process's peak RSS (VmHWM) back to its current RSS (Linux ≥ 4.0); false if refused. */
function resetPeakRss(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Bytes each log file of the run has now, to read only what is written after. */
function logSizes(dir: string): Map<string, number> {
  return new Map(fs.readdirSync(dir).filter((f) => f.endsWith('.log')).map((f) => [f, fs.statSync(path.join(dir, f)).size]));
}

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** The warnings and errors (pino levels ≥ 40) written to the run's logs since `from`, by message. */
function logsSince(dir: string, from: Map<string, number>, names: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.log') || !names.some((n) => f.startsWith(`${n}.`))) continue;
    const start = from.get(f) ?? 0; // a log that did not exist before: a restarted process's
    const text = fs.readFileSync(path.join(dir, f)).subarray(start).toString('utf8');
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      let level = 50;
      let msg = line.slice(0, 120);
      try {
        const j = JSON.parse(line) as { level?: number | string; msg?: string };
        level = typeof j.level === 'number' ? j.level : (LEVELS[j.level ?? ''] ?? 50);
        msg = j.msg ?? msg;
      } catch {
        // not JSON: a crash's stack trace
      }
      if (level < 40) continue;
      const key = `${f.replace(/\.\d+\.log$/, '')}: ${msg.replace(/lease \S+/, 'lease …')}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * One transaction of `rows` rows (`INSERT INTO mc_storage … SELECT … FROM seq_1_to_<rows>`)
 * applied by a running pipeline: the clock starts when its COMMIT returns and stops when every
 * server holds its last key, then when every partition is past it (a flush marker written
 * after it). Each process's peak RSS is reset first, so it is the peak of this stage.
 */
async function bulk(ctx: Ctx, pipe: { keys: RedisKeys; procs: Proc[] }, rows: number): Promise<BulkResult> {
  const prefix = `big-${ctx.runId}-`;
  const lastKey = `${prefix}${rows}`;
  const value = 'v'.repeat(100);
  const clients = ctx.servers.map((s) => new MemcachedTextClient(s, 5_000));
  const evictions = async () => (await Promise.all(clients.map((c) => c.stats()))).reduce((a, s) => a + Number(s.evictions ?? 0), 0);
  const evictionsBefore = await evictions();
  const redisBefore = await usedMemory(ctx.redis);
  let redisPeak = redisBefore;
  let lastRedisSample = 0;
  const procs = pipe.procs;
  const peakSinceReset = procs.map((p) => resetPeakRss(p.pid)).every(Boolean);
  const pids = procs.map((p) => p.pid);
  const cpuBefore = procs.map((p) => p.usage()?.cpuSeconds ?? 0);
  const logsBefore = logSizes(ctx.logDir);
  // The installing account: the applications' may write mc_storage but not read the sequence table.
  const conn = await connectMysql(ctx.config.mysql);
  let insertSeconds: number;
  let commitSeconds: number;
  let committed: number;
  try {
    await conn.query('BEGIN');
    let t = performance.now();
    // The issue's statement; the run's id in the keys (the servers may hold an earlier run's).
    await conn.query(`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT ?, CONCAT(?, seq), REPEAT('v', 100) FROM seq_1_to_${rows}`, [NS.bulk, prefix]);
    insertSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    await conn.query('COMMIT');
    committed = performance.now();
    commitSeconds = (committed - t) / 1000;
  } finally {
    await conn.end();
  }
  say(`bulk: ${fmt(rows)} rows inserted in ${fmt(insertSeconds, 1)} s, committed in ${fmt(commitSeconds, 1)} s; waiting for ${lastKey} on every server`);
  const marker = await endMarker(ctx);
  const pending = new Set(clients.keys());
  let lastReport = performance.now();
  while (pending.size > 0) {
    if (performance.now() - lastRedisSample > 200) {
      lastRedisSample = performance.now();
      redisPeak = Math.max(redisPeak, await usedMemory(ctx.redis));
    }
    for (const i of [...pending]) if ((await clients[i]!.get(lastKey))?.value.toString() === value) pending.delete(i);
    if (pending.size === 0) break;
    if (performance.now() - committed > 900_000) throw new Error(`the last key of the ${fmt(rows)}-row transaction did not reach every server in 15 minutes; logs in ${ctx.logDir}`);
    if (performance.now() - lastReport > 5_000) {
      lastReport = performance.now();
      const w = await Promise.all(Object.keys(ctx.config.datacenters).map(async (dc) => `${dc} at t ${Object.values(await ctx.redis.hgetall(pipe.keys.applied(dc))).map((v) => v.split(':').at(-1)).join('/')}`));
      say(`  bulk: ${fmt((performance.now() - committed) / 1000)} s after the commit, ${w.join(', ')}, ${procs.map((p) => `${p.name.replace(/^drain-\w+-/, '')} ${mb(p.usage()?.peakRssBytes ?? 0)}`).join(', ')}`);
    }
    await sleep(5);
  }
  const lastKeySeconds = (performance.now() - committed) / 1000;
  if (!(await waitForMarker(ctx, pipe.keys, marker, 600_000))) throw new Error(`the end marker after the ${fmt(rows)}-row transaction was not applied in 10 minutes`);
  const doneSeconds = (performance.now() - committed) / 1000;
  const usage = procs.map((p, i) => {
    const u = p.usage() ?? { peakRssBytes: 0, cpuSeconds: 0 };
    return { name: p.name.replace(/^drain-\w+-/, ''), peakRssBytes: u.peakRssBytes, cpuSeconds: u.cpuSeconds - cpuBefore[i]! };
  });
  // A sample of the keys, evenly spread, with the last one, read on every server.
  const step = Math.max(1, Math.floor(rows / 20_000));
  const sample = [...new Set([...Array.from({ length: Math.ceil(rows / step) }, (_, i) => `${prefix}${1 + i * step}`), lastKey])];
  let found = 0;
  let wrongValue = 0;
  for (const c of clients) {
    for (let i = 0; i < sample.length; i += 100) {
      for (const v of (await c.getMany(sample.slice(i, i + 100))).values()) {
        found++;
        if (!v.equals(Buffer.from(value))) wrongValue++;
      }
    }
  }
  const evicted = (await evictions()) - evictionsBefore;
  for (const c of clients) c.close();
  const logs = logsSince(ctx.logDir, logsBefore, procs.map((p) => p.name));
  const pick = (re: RegExp) => [...logs].filter(([k]) => re.test(k)).reduce((a, [, n]) => a + n, 0);
  const leaseLost = pick(/lost the lease/);
  const restarts = pick(/replacing it/);
  const lateRenewals = pick(/lease renewal was late/);
  const otherLogs = new Map([...logs].filter(([k]) => !/lost the lease|replacing it|lease renewal was late/.test(k)));
  const alive = procs.every((p, i) => p.pid !== undefined && p.pid === pids[i]);
  return { rows, insertSeconds, commitSeconds, lastKeySeconds, doneSeconds, usage, peakSinceReset, sampled: sample.length * ctx.servers.length, found, wrongValue, evictions: evicted, redisPeakBytes: redisPeak - redisBefore, leaseLost, restarts, lateRenewals, otherLogs, alive };
}

// ---------------------------------------------------------------------------------------------
// Live lag

interface LagResult {
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

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * A steady load of CALL set_key (per-key increasing values, each connection its own keys) plus
 * a prober: every 20 ms it sets a key of its own, and from the moment the CALL returns it reads
 * every server with a plain text-protocol client until all of them show the value.
 */
async function lag(ctx: Ctx, tag: string, target: number | 'max', seconds: number, loadKeys: (c: number) => string[]): Promise<LagResult> {
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

interface LagSeries {
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
async function lagSeries(ctx: Ctx, tag: string, procs: Measured[], jobsAdded?: () => Promise<number>): Promise<LagSeries> {
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

interface DistanceResult {
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
async function distance(ctx: Ctx, rttMs: number): Promise<DistanceResult> {
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

/** The lag table and the CPU table of a series. */
function lagTables(series: LagSeries): string[] {
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
async function bullmqCost(ctx: Ctx, series: LagSeries): Promise<string[]> {
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

// ---------------------------------------------------------------------------------------------
// Flush

interface FlushResult {
  keys: number;
  mysqlSeconds: number;
  totalSeconds: number;
  sampled: number;
  stillThere: number;
  registryLeft: number;
}

async function flushRun(ctx: Ctx, size: number, idx: number, pipe: { file: string; keys: RedisKeys }): Promise<FlushResult> {
  const nsId = 20 + idx;
  const name = `flush${size}`;
  const c = await mysql.createConnection(ctx.admin);
  await c.query('CALL create_namespace(?, ?)', [nsId, name]);
  await c.end();
  say(`flush ${fmt(size)}: writing the namespace's keys`);
  const value = 'f'.repeat(32);
  await insertRows(ctx, size, (i) => [nsId, `${name}-${ctx.runId}:${i}`, value, 0]);
  const marker = await endMarker(ctx);
  if (!(await waitForMarker(ctx, pipe.keys, marker, 600_000))) throw new Error(`the ${fmt(size)} keys did not reach memcached in 10 minutes`);
  say(`flush ${fmt(size)}: on every server; running mcrepl flush ${name}`);
  const started = performance.now();
  let mysqlSeconds = NaN;
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [path.join(repoRoot, 'bin', 'mcrepl.js'), '-c', pipe.file, 'flush', name, '--timeout', '600'], { stdio: ['ignore', 'pipe', 'ignore'] });
    p.stdout.on('data', (d: Buffer) => {
      if (Number.isNaN(mysqlSeconds) && /keys? to delete/.test(d.toString())) mysqlSeconds = (performance.now() - started) / 1000;
    });
    p.on('exit', resolve);
  });
  const totalSeconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`mcrepl flush ${name} exited ${code}`);
  // Every server, a sample of the keys (evenly spread), read with a plain client.
  const step = Math.max(1, Math.floor(size / 5_000));
  const sample = Array.from({ length: Math.ceil(size / step) }, (_, i) => `${name}-${ctx.runId}:${i * step}`);
  let stillThere = 0;
  for (const server of ctx.servers) {
    const client = new MemcachedTextClient(server, 5_000);
    for (let i = 0; i < sample.length; i += 100) stillThere += (await client.getMany(sample.slice(i, i + 100))).size;
    client.close();
  }
  const a = await mysql.createConnection(ctx.admin);
  const [r] = await a.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = ?', [nsId]);
  await a.end();
  return { keys: size, mysqlSeconds, totalSeconds, sampled: sample.length * ctx.servers.length, stillThere, registryLeft: Number(r[0]!.n) };
}

// ---------------------------------------------------------------------------------------------
// Report

function machine(ctx: Ctx, versions: Record<string, string>): string {
  const cpus = os.cpus();
  return [
    `- **CPU**: ${cpus[0]?.model ?? 'unknown'}, ${cpus.length} cores (everything below shares them: MariaDB, Redis, 4 memcached, the pipeline and the load)`,
    `- **Memory**: ${fmt(os.totalmem() / 1024 ** 3, 1)} GiB; **OS**: ${os.type()} ${os.release()}`,
    `- **Software**: Node ${process.version}, ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `- **Topology**: ${Object.entries(ctx.config.datacenters).map(([dc, d]) => `${dc} (${d.servers.length} servers)`).join(', ')}, ${ctx.config.partitions} partition${ctx.config.partitions === 1 ? '' : 's'}, replicate routing`,
  ].join('\n');
}

async function versions(ctx: Ctx): Promise<Record<string, string>> {
  const c = await mysql.createConnection(ctx.admin);
  const [v] = await c.query<RowDataPacket[]>('SELECT VERSION() AS v');
  await c.end();
  const redisInfo = await ctx.redis.info('server');
  const mc = new MemcachedTextClient(ctx.servers[0]!);
  const st = await mc.stats();
  mc.close();
  return { MySQL: String(v[0]!.v), Redis: /redis_version:(\S+)/.exec(redisInfo)?.[1] ?? '?', memcached: st.version ?? '?' };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  program.parse(process.argv);
  const opts = program.opts<Options>();
  const want = (s: Section) => !opts.only || opts.only.includes(s);
  const layout = stackLayout();
  const { started } = await up(layout);
  if (started.length) say(`local stack started: ${started.join(', ')}`);
  const runId = randomBytes(3).toString('hex');
  const logDir = path.join(repoRoot, '.stack', 'bench', runId);
  fs.mkdirSync(logDir, { recursive: true });
  const { config } = loadConfig({
    env: stackEnv(layout),
    overrides: {
      'mysql.database': `bench_${runId}`,
      'mysql.serverId': 300_000 + Math.floor(Math.random() * 100_000),
      'redis.prefix': `bench-${runId}`,
      'datacenters.east': { servers: layout.memcached.filter((m) => m.dc === 'east').map((m) => `127.0.0.1:${m.port}`) },
      'datacenters.west': { servers: layout.memcached.filter((m) => m.dc === 'west').map((m) => `127.0.0.1:${m.port}`) },
      'log.level': 'warn',
      ...Object.fromEntries(
        opts.set.map((kv) => {
          const i = kv.indexOf('=');
          if (i < 1) throw new InvalidArgumentError(`--set expects path=value, got '${kv}'`);
          const raw = kv.slice(i + 1);
          return [kv.slice(0, i), /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw];
        }),
      ),
    },
  });
  const redis = new Redis({ ...redisOptions(config.redis), lazyConnect: false, maxRetriesPerRequest: 3 });
  const ctx: Ctx = {
    opts,
    config,
    database: config.mysql.database,
    servers: Object.values(config.datacenters).flatMap((d) => serversOf(d)),
    writer: accountOpts(config, 'writer'),
    admin: accountOpts(config, 'admin'),
    redis,
    logDir,
    runId,
  };
  const installer = await connectMysql(config.mysql, { database: false });
  await installAll(installer, config);
  for (const [name, id] of Object.entries(NS)) await installer.query(`CALL \`${config.mysql.database}\`.create_namespace(?, ?)`, [id, name]);
  const soft = await versions(ctx);
  say(`run ${runId}: database ${ctx.database}, Redis prefix bench-${runId}-*, logs in ${path.relative(repoRoot, logDir)}`);

  const out: string[] = [];
  const targets: [string, string, boolean | undefined][] = [];
  const cleanups: (() => Promise<void>)[] = [];
  try {
    // The backlog: written while no pipeline runs, at the start of a fresh binlog file (MariaDB
    // 10.11 finds a GTID start position by reading its file from the top; the stack's files are
    // shared with every test run and can be large).
    await installer.query('FLUSH BINARY LOGS').catch((err: Error) => say(`could not rotate the binlog (${err.message}); the drain includes finding its start in a long file`));
    const from = await currentBinlogPosition(installer);
    // Every section but distance reads the backlog (or runs after the drain that applies it).
    const needBacklog = SECTIONS.some((x) => x !== 'distance' && want(x));
    let insertRate = NaN;
    let marker = { flushId: 0, token: '' };
    if (needBacklog) {
      say(`writing the backlog: ${fmt(opts.rows)} set ops, ${opts.valueBytes}-byte values over ${fmt(opts.keys)} keys, ${fmt(opts.backlogTxnRows)} per transaction`);
      const pad = 'v'.repeat(Math.max(0, opts.valueBytes - 8));
      // Small transactions come faster from more connections (each one waits for its commit).
      const conns = opts.backlogTxnRows < 100 ? 6 : 2;
      insertRate = await insertRows(ctx, opts.rows, (i) => [NS.backlog, `b:${i % opts.keys}`, `${String(i).padStart(7, '0')}:${pad}`.slice(0, opts.valueBytes), 0], conns, opts.backlogTxnRows);
      marker = await endMarker(ctx);
      say(`backlog written at ${fmt(insertRate)} rows/s`);
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
    }

    let zongjiRate = NaN;
    if (want('ceilings')) {
      say('ceiling: zongji parsing the backlog');
      zongjiRate = await zongjiCeiling(ctx, from, opts.rows);
      say(`ceiling: raw pipelined memcached sets to ${ctx.servers.length} servers at once`);
      const rawSets = await memcachedCeiling(ctx.servers, Math.min(opts.rows, 1_000_000), opts.valueBytes);
      say('ceiling: CALL set_key, 6 connections, 5 s');
      const callRate = await setKeyRate(ctx, 6, 5);
      out.push(
        '## Ceilings',
        '',
        '| what | rate |',
        '|---|---:|',
        `| zongji parsing the backlog, nothing else (${fmt(opts.rows)} rows) | ${fmt(zongjiRate)} rows/s |`,
        `| raw pipelined memcached \`ms\`, ${opts.valueBytes}-byte values, ${ctx.servers.length} servers at once | ${fmt(rawSets)} sets/s = ${fmt(rawSets / ctx.servers.length)} rows/s to all ${ctx.servers.length} |`,
        `| MySQL: multi-row INSERT into mc_storage (trigger, registry, binlog), 2 connections | ${fmt(insertRate)} rows/s |`,
        `| MySQL: \`CALL set_key\`, autocommit, 6 connections | ${fmt(callRate)} rows/s |`,
        '',
      );
    }

    let naive: Awaited<ReturnType<typeof runNaive>> | undefined;
    if (want('naive')) {
      say(`naive baseline: ${fmt(opts.naiveRows)} rows, one BullMQ job per row per data center`);
      const tailerAcc = mysqlFor(config.mysql, 'tailer');
      naive = await runNaive({
        redis: { ...config.redis, prefix: `bench-${runId}-naive` },
        mysql: { host: tailerAcc.host, port: tailerAcc.port, user: tailerAcc.user, password: tailerAcc.password ?? '', database: ctx.database, serverId: config.mysql.serverId + 101 },
        datacenters: Object.fromEntries(Object.entries(config.datacenters).map(([dc, d]) => [dc, d.servers])),
        from,
        rows: Math.min(opts.naiveRows, opts.rows),
        timeoutMs: 600_000,
      });
      say(`naive: ${fmt(naive.rowsPerSec)} rows/s`);
    }

    let lagPipe: { file: string; keys: RedisKeys; procs: Proc[] } | undefined;
    let lagResults: LagSeries | undefined;
    let metaDrain: DrainResult | undefined;
    if (want('drain') || want('bulk') || want('lag') || want('flush')) {
      const drains: DrainResult[] = [];
      // The default writer (meta) drains last: its pipeline stays up for the lag and flush sections.
      const writers = want('drain') ? [...opts.writers].sort((a, b) => Number(a === 'meta') - Number(b === 'meta')) : (['meta'] as const);
      for (const [i, w] of writers.entries()) {
        const keep = i === writers.length - 1;
        say(`drain: ${fmt(opts.rows)} rows to ${ctx.servers.length} servers, ${w} writer`);
        const d = await drain(ctx, w, from, marker, keep);
        say(`drain (${w}): ${fmt(d.rowsPerSec)} rows/s in ${fmt(d.seconds, 1)} s (after ${fmt(d.startupSeconds, 1)} s starting the processes); peak RSS ${d.usage.map((u) => `${u.name} ${mb(u.peakRssBytes)}`).join(', ')}`);
        drains.push(d);
        if (w === 'meta') metaDrain = d;
        if (keep) {
          lagPipe = { file: d.file, keys: d.keys, procs: d.procs };
          cleanups.push(d.stop);
        }
        {
          const result = await check(ctx.admin, ctx.servers, [], { nsId: NS.backlog });
          say(`drain (${w}): checked ${fmt(result.keysChecked)} keys × ${ctx.servers.length} servers against MySQL: ${result.divergent.size} divergent`);
          if (result.divergent.size > 0) throw new Error(`the drain left ${result.divergent.size} keys different from MySQL`);
        }
      }
      if (want('drain')) {
        const meta = drains.find((d) => d.writer === 'meta') ?? drains[0]!;
        say('stages: the tailer alone, then the workers alone');
        const st = await stages(ctx, from, marker, meta.txnSeq);
        const names = meta.usage.map((u) => u.name);
        out.push(
          `## Drain: ${fmt(opts.rows)} set ops (${opts.valueBytes}-byte values, ${fmt(opts.keys)} keys) to all ${ctx.servers.length} servers${opts.backlogTxnRows === 1000 ? "" : `, ${fmt(opts.backlogTxnRows)} per transaction`}`,
          '',
          'Written while the pipeline was stopped, then applied by the real CLI processes (one tailer, one worker group per data center): the workers are started, then the tailer; the clock runs from the tailer holding its lease (every process up) to the last op on the last server. Starting the processes (Node loading its modules, connecting) is the *start* column, not in the rate: it is the same for any backlog, and the naive baseline and the ceilings run inside the benchmark process, without it.',
          '',
          `| pipeline | rows/s | × naive | of zongji ceiling | start | ${names.map((n) => `peak RSS ${n}`).join(' | ')} | CPU s ${names.join(' / ')} |`,
          `|---|---:|---:|---:|---:|${names.map(() => '---:|').join('')}---:|`,
          ...(naive ? [`| naive: one BullMQ job per row per DC, memjs (${fmt(naive.rows)} rows) | ${fmt(naive.rowsPerSec)} | 1.0 | ${fmt((100 * naive.rowsPerSec) / zongjiRate, 1)} % | | ${names.map(() => '').join(' | ')} | |`] : []),
          ...drains.map(
            (d) =>
              `| mcrepl, ${d.writer} writer | ${fmt(d.rowsPerSec)} | ${naive ? fmt(d.rowsPerSec / naive.rowsPerSec, 1) : '–'} | ${fmt((100 * d.rowsPerSec) / zongjiRate, 1)} % | ${fmt(d.startupSeconds, 1)} s | ${d.usage.map((u) => mb(u.peakRssBytes)).join(' | ')} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`,
          ),
          '',
          `Where the CPU went during each drain (CPU seconds; the machine has ${os.cpus().length} cores, so a drain of *w* seconds has ${os.cpus().length}·*w* to spend):`,
          '',
          `| drain | wall s | ${names.join(' | ')} | ${meta.servers.map((x) => x.name).join(' | ')} | total |`,
          `|---|---:|${names.map(() => '---:|').join('')}${meta.servers.map(() => '---:|').join('')}---:|`,
          ...drains.map((d) => {
            const total = d.usage.reduce((a, u) => a + u.cpuSeconds, 0) + d.servers.reduce((a, x) => a + x.cpuSeconds, 0);
            return `| ${d.writer} | ${fmt(d.seconds, 1)} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' | ')} | ${d.servers.map((x) => fmt(x.cpuSeconds, 1)).join(' | ')} | ${fmt(total, 1)} of ${fmt(d.seconds * os.cpus().length, 1)} |`;
          }),
          '',
          '| stage alone | rate |',
          '|---|---:|',
          `| tailer: binlog → jobs in Redis (no workers running) | ${fmt(st.tailerRowsPerSec)} rows/s, peak RSS ${mb(st.tailerRss)} |`,
          `| worker groups: queued jobs → ${ctx.servers.length} servers (no tailer running) | ${fmt(st.workersRowsPerSec)} rows/s |`,
          `| Redis memory per queued op (per data center) | ${fmt(st.redisBytesPerOp)} bytes |`,
          '',
        );
        targets.push([`drain ≥ 50,000 rows/s to all four servers`, `${fmt(meta.rowsPerSec)} rows/s (${fmt(opts.rows / (meta.seconds + meta.startupSeconds))} rows/s counting the ${fmt(meta.startupSeconds, 1)} s process start)`, meta.rowsPerSec >= 50_000]);
        if (naive) targets.push(['drain ≥ 10× the naive baseline', `${fmt(meta.rowsPerSec / naive.rowsPerSec, 1)}×`, meta.rowsPerSec >= 10 * naive.rowsPerSec]);
        const peak = Math.max(...meta.usage.map((u) => u.peakRssBytes));
        targets.push(['tailer and each worker ≤ 200 MB peak RSS during the drain', `max ${mb(peak)}`, peak <= 200 * 1024 * 1024]);
      }
    }

    if (want('ketama')) {
      out.push(...(await ketamaSection(ctx, from, marker)));
    }

    if (want('bulk') && opts.bulkRows > 0 && lagPipe) {
      say(`bulk: one transaction of ${fmt(opts.bulkRows)} rows, applied by the drain's processes`);
      const b = await bulk(ctx, lagPipe, opts.bulkRows);
      say(`bulk: last key on every server ${fmt(b.lastKeySeconds, 1)} s after the commit, every partition ${fmt(b.doneSeconds, 1)} s; peak RSS ${b.usage.map((u) => `${u.name} ${mb(u.peakRssBytes)}`).join(', ')}; ${b.found} of ${b.sampled} sampled reads found; lease lost ${b.leaseLost}, restarts ${b.restarts}`);
      for (const [k, n] of b.otherLogs) say(`  bulk log: ${n}× ${k}`);
      // Against the drain of the same run, per row: a drain of a different size scales.
      const drainSeconds = metaDrain ? (metaDrain.seconds * b.rows) / opts.rows : NaN;
      const ratio = b.lastKeySeconds / drainSeconds;
      const names = b.usage.map((u) => u.name);
      const drainRef = metaDrain ? (b.rows === opts.rows ? `the ${fmt(opts.rows)}-op drain: ${fmt(metaDrain.seconds, 1)} s` : `the ${fmt(opts.rows)}-op drain scaled to ${fmt(b.rows)} rows: ${fmt(drainSeconds, 1)} s`) : 'no drain in this run';
      out.push(
        `## One large transaction: ${fmt(b.rows)} rows in one COMMIT`,
        '',
        `\`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT 50, CONCAT('big-<run>-', seq), REPEAT('v', 100) FROM seq_1_to_${b.rows}\` in one transaction, applied by the drain's processes (one tailer, one worker group per data center, kept running). The tailer stages the transaction's chunks in Redis while it streams in and adds their jobs at its end. The clock starts when the COMMIT returns; it stops when every server holds the last key, then when every partition of every data center is past the transaction (a flush marker written after it). Peak RSS is each process's peak during this stage${b.peakSinceReset ? ' (its VmHWM reset at the start)' : ' (since the process started: resetting VmHWM was refused)'}. Lease losses and restarts are counted in the processes' logs.`,
        '',
        `| rows | INSERT … SELECT | COMMIT | commit → last key on every server | commit → every partition past it | × the drain's time (${drainRef}) | ${names.map((n) => `peak RSS ${n}`).join(' | ')} | CPU s ${names.join(' / ')} |`,
        `|---:|---:|---:|---:|---:|---:|${names.map(() => '---:|').join('')}---:|`,
        `| ${fmt(b.rows)} | ${fmt(b.insertSeconds, 1)} s | ${fmt(b.commitSeconds, 1)} s | ${fmt(b.lastKeySeconds, 1)} s | ${fmt(b.doneSeconds, 1)} s | ${fmt(ratio, 2)} | ${b.usage.map((u) => mb(u.peakRssBytes)).join(' | ')} | ${b.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`,
        '',
        '| sample read (keys × servers) | found | wrong value | memcached evictions | Redis memory at the most (above before) | leases lost | components restarted | late lease renewals | processes alive at the end |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|:---:|',
        `| ${fmt(b.sampled)} | ${fmt(b.found)} | ${b.wrongValue} | ${fmt(b.evictions)} | ${mb(b.redisPeakBytes)} | ${b.leaseLost} | ${b.restarts} | ${b.lateRenewals} | ${b.alive ? 'yes' : '**no**'} |`,
        '',
        ...(b.otherLogs.size ? ['Other warnings and errors in the logs meanwhile:', '', ...[...b.otherLogs].map(([k, n]) => `- ${n}× ${k}`), ''] : []),
      );
      targets.push([`one ${fmt(b.rows)}-row transaction on every server ≤ 2× the drain's time`, `${fmt(b.lastKeySeconds, 1)} s after its COMMIT, ${fmt(ratio, 2)}× (${drainRef})`, ratio <= 2 && b.found === b.sampled && b.wrongValue === 0]);
      const peak = Math.max(...b.usage.map((u) => u.peakRssBytes));
      targets.push(['tailer and each worker ≤ 200 MB peak RSS during it', `max ${mb(peak)}`, peak <= 200 * 1024 * 1024]);
      targets.push(['no lease lost, no restart during it', `${b.leaseLost} leases lost, ${b.restarts} components restarted${b.alive ? '' : ', a process exited'}`, b.leaseLost === 0 && b.restarts === 0 && b.alive]);
    }

    if (want('lag') && lagPipe) {
      const pipeKeys = lagPipe.keys;
      const firstDc = Object.keys(ctx.config.datacenters)[0]!;
      // BullMQ numbers a queue's jobs with a counter (`<queue>:id`).
      const jobsAdded = async () => {
        const ids = await Promise.all(Array.from({ length: ctx.config.partitions }, (_, p) => ctx.redis.get(pipeKeys.queueKey(firstDc, p, 'id'))));
        return ids.reduce((a, v) => a + Number(v ?? 0), 0);
      };
      const series = await lagSeries(ctx, 'mcrepl', measured(lagPipe.procs), jobsAdded);
      const checked = await check(ctx.admin, ctx.servers, [], { nsId: NS.lag });
      out.push(
        '## Live lag: commit → visible on every server of every data center',
        '',
        `A steady load of \`CALL set_key\` for ${opts.lagSeconds} s per rate; a prober sets a key of its own every 20 ms and, from the moment its CALL returns, reads all ${ctx.servers.length} servers with a plain text-protocol client until each shows the value (1 ms polling; the first second is warm-up).`,
        '',
        ...lagTables(series),
        `Per-key order under this load: ${fmt(series.observations)} reads of ${series.watched} keys on every server, ${series.regressions} regressions. Afterwards the chaos run's checker compared ${fmt(checked.keysChecked)} keys × ${ctx.servers.length} servers with MySQL: ${checked.divergent.size} divergent.`,
        '',
      );
      lagResults = series;
      out.push(...(await bullmqCost(ctx, series)));
      const at2k = series.rows.find((r) => r.target === 2000);
      if (at2k) targets.push(['live lag p99 ≤ 20 ms at 2,000 rows/s', ms(at2k.p99), at2k.p99 <= 20]);
      targets.push(['per-key order and the checker under load', `${series.regressions} regressions, ${checked.divergent.size} divergent keys`, series.regressions === 0 && checked.divergent.size === 0]);
    }

    if (want('flush') && lagPipe) {
      const rows: FlushResult[] = [];
      for (const [i, size] of opts.flushKeys.entries()) {
        const r = await flushRun(ctx, size, i, lagPipe);
        say(`flush ${fmt(size)}: ${fmt(r.totalSeconds, 1)} s (MySQL ${fmt(r.mysqlSeconds, 1)} s); ${r.stillThere} of ${r.sampled} sampled reads still found a key`);
        rows.push(r);
      }
      out.push(
        '## Namespace flush',
        '',
        '`mcrepl flush <namespace>` from start until it returns (every partition of every data center applied the flush marker, which follows every delete); then a sample of the keys is read on every server with a plain client.',
        '',
        '| keys | flush_namespace in MySQL | until gone from every server | sample read | keys found | registry rows left |',
        '|---:|---:|---:|---:|---:|---:|',
        ...rows.map((r) => `| ${fmt(r.keys)} | ${fmt(r.mysqlSeconds, 1)} s | ${fmt(r.totalSeconds, 1)} s | ${fmt(r.sampled)} | ${r.stillThere} | ${r.registryLeft} |`),
        '',
      );
      const big = rows.find((r) => r.keys === 1_000_000);
      if (big) targets.push(['flush of a 1,000,000-key namespace ≤ 30 s', `${fmt(big.totalSeconds, 1)} s`, big.totalSeconds <= 30 && big.stillThere === 0]);
    }

    if (want('distance') && opts.redisRtt.length > 0) {
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      // The flush before it leaves MariaDB purging a million deleted rows for a while.
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      const runs: DistanceResult[] = [];
      for (const rtt of opts.redisRtt) {
        const d = await distance(ctx, rtt);
        const near = d.lag.perDc.filter((x) => x.dc !== d.far);
        const farLag = d.lag.perDc.find((x) => x.dc === d.far)!;
        say(`distance ${rtt} ms: ${near.map((x) => `${x.dc} p50 ${ms(x.p50)} p99 ${ms(x.p99)}`).join(', ')}; ${d.far} p50 ${ms(farLag.p50)} p99 ${ms(farLag.p99)}; ${d.far}'s queue at most ${d.maxQueued} jobs, ${d.queuedAtEnd} at the end`);
        runs.push(d);
      }
      const dcs = Object.keys(config.datacenters);
      const far = dcs.at(-1)!;
      out.push(
        `## Distance inside a site: ${far}'s worker group away from Redis`,
        '',
        `The single-site layout, with \`${far}\`'s worker group reaching Redis through a latency proxy on loopback (\`scripts/latency-proxy.ts\`, this kernel has no netem) that adds the round trip below; the tailer and the other worker groups are next to Redis. A steady \`CALL set_key\` load at ${fmt(opts.distanceRate)} rows/s for ${opts.lagSeconds} s, probed as in the lag section, per data center. The queue is ${far}'s jobs waiting in Redis, sampled every 100 ms. Target: the far data center keeps up (its queue stays bounded) and its lag p99 is within 5 round trips of the local one.`,
        '',
        `| added round trip (measured) | achieved | ${dcs.map((dc) => `${dc} p50 / p99`).join(' | ')} | ${far} − local p99 | ${far}'s queue: most / at the end |`,
        `|---|---:|${dcs.map(() => '---:|').join('')}---:|---:|`,
        ...runs.map((d) => {
          const local = Math.max(...d.lag.perDc.filter((x) => x.dc !== d.far).map((x) => x.p99));
          const farP99 = d.lag.perDc.find((x) => x.dc === d.far)!.p99;
          return `| ${d.rttMs} ms (${fmt(d.measuredRttMs, 1)} ms) | ${fmt(d.lag.achieved)} rows/s | ${d.lag.perDc.map((x) => `${ms(x.p50)} / ${ms(x.p99)}`).join(' | ')} | ${ms(farP99 - local)} | ${d.maxQueued} / ${d.queuedAtEnd} jobs |`;
        }),
        '',
      );
      for (const d of runs) {
        const local = Math.max(...d.lag.perDc.filter((x) => x.dc !== d.far).map((x) => x.p99));
        const farP99 = d.lag.perDc.find((x) => x.dc === d.far)!.p99;
        const bounded = d.queuedAtEnd <= 2 * config.partitions && d.lag.lost === 0;
        targets.push([
          `a data center ${d.rttMs} ms from Redis keeps up with ${fmt(opts.distanceRate)} rows/s, lag p99 ≤ local + 5 round trips`,
          `p99 ${ms(farP99)} against ${ms(local)} locally (+${ms(farP99 - local)}, 5 round trips = ${fmt(5 * d.rttMs)} ms); queue at most ${d.maxQueued} jobs, ${d.queuedAtEnd} at the end`,
          bounded && farP99 - local <= 5 * d.rttMs,
        ]);
      }
    }

    if (want('wan')) {
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      say(`wan: two sites ${opts.wanRtt} ms apart, ${fmt(opts.distanceRate)} rows/s, west cut off for ${opts.wanCut} s`);
      const w = await runWan({ rtt: opts.wanRtt, rate: opts.distanceRate, measure: opts.lagSeconds, cut: opts.wanCut, keys: 5_000, fallbackBehind: 10_000, portBase: layout.mariadb.port - 6 }, layout);
      out.push(
        `## Two sites across a WAN: east (the primary) and west (a replica ${opts.wanRtt} ms away)`,
        '',
        `\`npm run wan\` (scripts/wan.ts) inside this run: west's MariaDB replica replicates from the primary through the latency proxy (${opts.wanRtt} ms round trip), and west has its own Redis, tailer (reading the replica) and worker group. A \`CALL set_key\` load of ${fmt(opts.distanceRate)} rows/s on the primary; lag is commit → visible on every server of the site, ${opts.lagSeconds} s before the cut; then west is cut off for ${opts.wanCut} s while the load goes on, and timed from the heal until it holds the last probe written before it.`,
        '',
        ...wanReport(w),
        '',
      );
      targets.push([`two sites ${opts.wanRtt} ms apart: west's p99 ≤ east's + ${opts.wanRtt} ms`, `${ms(w.before.west.p99)} against ${ms(w.before.east.p99)}`, w.before.west.p99 <= w.before.east.p99 + opts.wanRtt]);
      if (w.eastDuringCut) targets.push([`east's p99 while west is cut off within 20 % of before`, `${ms(w.eastDuringCut.p99)} against ${ms(w.before.east.p99)}`, w.eastDuringCut.p99 <= 1.2 * w.before.east.p99]);
      if (w.catchUp) targets.push(['west catches up ≥ 20,000 rows/s after the heal', `${fmt(w.catchUp.rowsPerSec)} rows/s (${fmt(w.catchUp.rows)} rows in ${fmt(w.catchUp.seconds, 1)} s)`, w.catchUp.rowsPerSec >= 20_000]);
      targets.push(['two sites: divergent keys after the cut and heal', String(w.divergent), w.divergent === 0]);
    }

    if (want('lag')) {
      // The same probe against the least a binlog reader can do here (bench/floor.ts), with
      // mcrepl stopped: what the machine itself costs in lag at these rates.
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      // The flush before it leaves MariaDB purging a million deleted rows for a while.
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      say('lag floor: the binlog written straight to memcached (bench/floor.ts), mcrepl stopped');
      const floor = await startFloor({ mysql: { ...mysqlFor(config.mysql, 'tailer'), serverId: config.mysql.serverId + 202 }, servers: ctx.servers, from: await currentBinlogPosition(installer) });
      let series: LagSeries;
      try {
        series = await lagSeries(ctx, 'floor', [{ name: 'floor', cpuSeconds: () => cpuSecondsOf(floor.pid) }]);
      } finally {
        await floor.stop();
      }
      out.push(
        '## Lag floor: the same probe, the binlog written straight to memcached',
        '',
        'What the machine itself costs: `bench/floor.ts` reads the binlog with the same listener and writes each transaction at once to every server (one pipelined connection each, no Redis, no jobs, no other process), under the same load and probe, with mcrepl stopped. mcrepl adds to it the Redis queues and the hand-over to one worker process per data center.',
        '',
        ...lagTables(series),
      );
      const floor2k = series.rows.find((r) => r.target === 2000);
      if (floor2k) {
        // Beside the lag target: what the machine allows at that rate.
        const at = targets.findIndex(([t]) => t.startsWith('live lag'));
        targets.splice(at < 0 ? targets.length : at + 1, 0, ['(lag floor: p99 at 2,000 rows/s, the binlog written straight to memcached, no queue)', `${ms(floor2k.p99)} (${fmt(floor2k.achieved)} rows/s reached)`, undefined]);
      }
      for (const r of series.rows) {
        const ours = lagResults?.rows.find((x) => x.target === r.target);
        if (ours) say(`lag at ${String(r.target)}: mcrepl p99 ${ms(ours.p99)}, floor p99 ${ms(r.p99)}`);
      }
    }
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
    await installer.query(`DROP DATABASE IF EXISTS \`${ctx.database}\``).catch(() => undefined);
    await installer.end();
    await dropPrefix(redis, `bench-${runId}`).catch(() => undefined);
    redis.disconnect();
    if (started.length) {
      await down(layout);
      say('local stack stopped');
    }
  }

  const args = process.argv.slice(2);
  const doc = [
    '# Benchmarks',
    '',
    `Measured by \`npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}\` on ${new Date().toISOString().replace(/\..*/, 'Z')}, every number in the same run. Rerun it to replace this file.`,
    '',
    machine(ctx, soft),
    '',
    ...(targets.length
      ? ['## Targets', '', '| target | measured | met |', '|---|---|:---:|', ...targets.map(([t, m, ok]) => `| ${t} | ${m} | ${ok === undefined ? '–' : ok ? 'yes' : '**no**'} |`), '']
      : []),
    ...out,
    ...profileReport(ctx),
  ].join('\n');
  process.stdout.write(`\n${doc}\n`);
  if (opts.write) {
    fs.writeFileSync(path.resolve(repoRoot, opts.out), doc);
    say(`written to ${opts.out}`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[bench] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
