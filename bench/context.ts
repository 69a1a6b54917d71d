/** What every benchmark section shares: the options, the run's context, and helpers for pipelines of the run. */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { type ResolvedConfig } from '../src/config/schema.js';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { cpuSecondsOf, sleep } from '../scripts/harness.js';

export const SECTIONS = ['ceilings', 'naive', 'drain', 'ketama', 'bulk', 'lag', 'distance', 'wan', 'flush'] as const;
export type Section = (typeof SECTIONS)[number];

export interface Options {
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

export const t0 = Date.now();
export const say = (msg: string) => process.stdout.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const mb = (bytes: number) => `${fmt(bytes / 1024 / 1024)} MB`;
export const ms = (x: number) => `${fmt(x, x < 10 ? 1 : 0)} ms`;

export interface Ctx {
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

export function accountOpts(config: ResolvedConfig, role: 'writer' | 'admin' | 'tailer'): mysql.ConnectionOptions {
  const c = mysqlFor(config.mysql, role);
  return { host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database };
}

export let pipelines = 0;

/** A config for one pipeline of this run: its own Redis prefix (queues, checkpoint). */
export function pipelineConfig(ctx: Ctx, name: string, writer: 'meta' | 'memjs' | 'auto' = 'auto'): { config: ResolvedConfig; file: string; keys: RedisKeys } {
  // Its own server_id too: two binlog readers with one id make the server drop the older one.
  const config: ResolvedConfig = {
    ...ctx.config,
    mysql: { ...ctx.config.mysql, serverId: ctx.config.mysql.serverId + ++pipelines },
    redis: { ...ctx.config.redis, prefix: `bench-${ctx.runId}-${name}` },
    memcached: { ...ctx.config.memcached, writer },
  };
  return { config, file: writeConfigFile(config), keys: new RedisKeys(config.redis.prefix) };
}

export const NS = { backlog: 1, lag: 2, end: 9, bulk: 50 } as const;

/** Writes rows with multi-row INSERTs (`perTxn` rows each, autocommit) over `connections` connections. */
export async function insertRows(ctx: Ctx, total: number, row: (i: number) => [number, string, string, number], connections = 2, perTxn = 1000): Promise<number> {
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
export async function endMarker(ctx: Ctx): Promise<{ flushId: number; token: string }> {
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
export async function waitForMarker(ctx: Ctx, keys: RedisKeys, marker: { flushId: number; token: string }, timeoutMs: number, onTick?: () => void): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    onTick?.();
    const done = await Promise.all(Object.keys(ctx.config.datacenters).map((dc) => ctx.redis.scard(keys.flushDone(marker.flushId, marker.token, dc))));
    if (done.every((n) => n >= ctx.config.partitions)) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

export async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
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
export async function settle(name: string, pid: number | undefined): Promise<void> {
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
