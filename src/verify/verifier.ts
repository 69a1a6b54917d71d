/**
 * `mcrepl verify`: every memcached server of every data center against the key registry
 * (`mc_stored_keys`: each live key's value digest and expiry).
 *
 * - A key the registry holds must be, with a value of its digest, on every server meant to hold
 *   it (all of a `replicate` data center; its own on a `ketama` ring), unless it has expired.
 * - With `all`, each server's keys are also listed (`lru_crawler metadump`): a key the registry
 *   does not hold (deleted, flushed, expired), or one on a server it does not belong on, is found
 *   too. A sample reads only the sampled keys.
 * - No false alarm under load: what differs on the first look is looked at again once every data
 *   center has applied everything committed before that look (the tailer's checkpoint covers
 *   the primary's binlog position taken before it, and every queue is past it); only what still
 *   differs is reported.
 * - `repair`: a missing value is copied (memcached `add`, so a write that got there first wins)
 *   from another server of the data center that holds it with the registry's digest; anything
 *   else wrong is deleted where it is, and readers fill it again.
 */
import { createHash } from 'node:crypto';
import type { RowDataPacket } from 'mysql2/promise';
import type { Redis } from 'ioredis';
import { serversOf, type ResolvedConfig } from '../config/schema.js';
import { sitesOf, type Site } from '../config/sites.js';
import { withRedis } from '../coordination/redis.js';
import { RedisKeys } from '../fanout/redis-keys.js';
import { queueDepth } from '../fanout/topology.js';
import { mysqlFor } from '../registry/accounts.js';
import { connectMysql } from '../registry/mysql.js';
import { MetaClient } from '../sink/meta-client.js';
import { createRoute } from '../sink/routes/create-route.js';
import type { Route } from '../sink/routes/route.js';
import type { Checkpoint, Position } from '../source/checkpoint-store.js';
import { currentBinlogPosition } from '../source/position.js';
import { transactionsBehind } from '../source/source-lag.js';

export type Problem = 'missing' | 'wrong value' | 'present after its expiry' | 'present, not in the registry' | 'on a server it does not belong on';

export interface Divergence {
  dc: string;
  server: string;
  /** The key, printable (latin1), and its bytes in hex. */
  key: string;
  keyHex: string;
  problem: Problem;
  detail: string;
  repaired?: string;
}

export interface VerifyOptions {
  namespace?: number;
  /** Keys sampled from the registry; undefined: all, and each server's keys listed too. */
  sample?: number;
  repair?: boolean;
  timeoutMs?: number;
  /** Keys checked so far, of the total. */
  progress?: (done: number, total: number) => void;
  /** How long to wait for the pipeline to apply what was committed before the first look (ms). */
  settleTimeoutMs?: number;
  /** Only these data centers' servers. */
  datacenters?: readonly string[];
}

export interface VerifyResult {
  keys: number;
  servers: number;
  divergent: Divergence[];
  /** First-look differences that the pipeline had not applied yet (gone on the second look). */
  settled: number;
  /** The pipeline did not catch up within settleTimeoutMs: the second look was made anyway. */
  unsettled?: string;
}

interface Entry {
  key: Buffer;
  expiresAt: number | null;
  md5: string;
}

interface Target {
  dc: string;
  site: Site;
  route: Route;
  servers: string[];
}

const BATCH = 500;
/** Keys per `IN (...)` when the registry is read for named keys. */
const IN_BATCH = 5_000;
/** A key within this many seconds of its expiry is not judged (clocks differ). */
const EXPIRY_SLACK_S = 2;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

async function readRegistry(config: ResolvedConfig, opts: VerifyOptions, only?: Buffer[]): Promise<Map<string, Entry>> {
  const conn = await connectMysql(mysqlFor(config.mysql, 'admin'));
  try {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.namespace !== undefined) {
      where.push('ns_id = ?');
      args.push(opts.namespace);
    }
    const select = 'SELECT mc_key, expires_at, HEX(value_md5) AS md5 FROM mc_stored_keys';
    const out = new Map<string, Entry>();
    const add = (rows: RowDataPacket[]) => {
      for (const r of rows) out.set((r.mc_key as Buffer).toString('latin1'), { key: r.mc_key as Buffer, expiresAt: r.expires_at === null ? null : Number(r.expires_at), md5: String(r.md5).toLowerCase() });
    };
    if (only) {
      // Named keys (those looked at again), a bounded IN list at a time.
      for (let i = 0; i < only.length; i += IN_BATCH) {
        const [rows] = await conn.query<RowDataPacket[]>(`${select} WHERE ${[...where, 'mc_key IN (?)'].join(' AND ')}`, [...args, only.slice(i, i + IN_BATCH)]);
        add(rows);
      }
      return out;
    }
    const order = opts.sample !== undefined ? ` ORDER BY RAND() LIMIT ${Math.floor(opts.sample)}` : '';
    const [rows] = await conn.query<RowDataPacket[]>(`${select}${where.length ? ` WHERE ${where.join(' AND ')}` : ''}${order}`, args);
    add(rows);
    return out;
  } finally {
    await conn.end();
  }
}

function targetsOf(config: ResolvedConfig): Target[] {
  return sitesOf(config).flatMap((site) => Object.entries(site.config.datacenters).map(([dc, d]) => ({ dc, site, route: createRoute(d), servers: serversOf(d) })));
}

/** Looks at `keys` (and, with `listAll`, every key each server holds) on every server; what differs. */
async function look(targets: Target[], registry: Map<string, Entry>, keys: Buffer[], listAll: boolean, timeoutMs: number, progress?: (n: number) => void): Promise<Divergence[]> {
  const out: Divergence[] = [];
  const now = Date.now() / 1000;
  const found = (dc: string, server: string, key: Buffer, problem: Problem, detail: string) => out.push({ dc, server, key: key.toString('latin1'), keyHex: key.toString('hex'), problem, detail });
  for (const t of targets) {
    await Promise.all(
      t.servers.map(async (server, i) => {
        const client = new MetaClient(server, timeoutMs);
        try {
          const judge = async (batch: Buffer[], listed: boolean) => {
            const values = await client.getWithTtl(batch);
            batch.forEach((key, j) => {
              const v = values[j];
              const entry = registry.get(key.toString('latin1'));
              const holds = t.route.holds(i, key);
              if (entry && entry.expiresAt !== null && Math.abs(entry.expiresAt - now) <= EXPIRY_SLACK_S) return;
              const live = entry && (entry.expiresAt === null || entry.expiresAt > now);
              if (!holds) {
                if (v) found(t.dc, server, key, 'on a server it does not belong on', 'placed on other servers of the data center');
                return;
              }
              if (live) {
                if (!v) found(t.dc, server, key, 'missing', `the registry holds a value (md5 ${entry.md5})`);
                else if (md5(v.value) !== entry.md5) found(t.dc, server, key, 'wrong value', `md5 ${md5(v.value)}, the registry says ${entry.md5}`);
              } else if (v) {
                if (entry) found(t.dc, server, key, 'present after its expiry', `expired at ${new Date(entry.expiresAt! * 1000).toISOString()}`);
                else if (listed) found(t.dc, server, key, 'present, not in the registry', 'deleted, flushed, expired, or never written through mcrepl');
              }
            });
            if (!listed) progress?.(batch.length);
          };
          for (let k = 0; k < keys.length; k += BATCH) await judge(keys.slice(k, k + BATCH), false);
          if (listAll) {
            await MetaClient.eachKey(server, timeoutMs, BATCH, async (listed) => {
              const unknown = listed.filter((k) => !registry.has(k.toString('latin1')));
              if (unknown.length > 0) await judge(unknown, true);
            });
          }
        } finally {
          client.close();
        }
      }),
    );
  }
  return out;
}

/**
 * Waits until every data center has applied what the primary had committed at `head`: each
 * site's checkpoint covers it, then each partition's queue is past the checkpoint's op number
 * or empty. Undefined when done, else why not (within `timeoutMs`).
 */
async function settle(config: ResolvedConfig, head: Position | null, timeoutMs: number): Promise<string | undefined> {
  if (!head) return 'the primary did not say where its binlog ends';
  const deadline = Date.now() + timeoutMs;
  for (const site of sitesOf(config)) {
    const why = await withRedis(site.config.redis, 'verify', async (redis: Redis) => {
      const keys = new RedisKeys(site.config.redis.prefix);
      let target: number | undefined;
      for (;;) {
        if (target === undefined) {
          const raw = await redis.get(keys.checkpoint);
          const cp = raw ? (JSON.parse(raw) as Checkpoint) : undefined;
          if (cp && transactionsBehind(head, cp.position) === 0) target = cp.txnSeq;
        }
        if (target !== undefined) {
          let behind = false;
          for (const dc of Object.keys(site.config.datacenters)) {
            const applied = await redis.hgetall(keys.applied(dc));
            for (let p = 0; p < site.config.partitions && !behind; p++) {
              const wm = Number(applied[String(p)]?.split(':').at(-1) ?? -1);
              if (wm >= target) continue;
              const d = await queueDepth(redis, keys, dc, p);
              if (d.waiting + d.active + d.delayed > 0) behind = true;
            }
          }
          if (!behind) return undefined;
        }
        if (Date.now() > deadline) return `site ${site.name} had not applied what was committed before the first look after ${Math.round(timeoutMs / 1000)} s`;
        await new Promise((r) => setTimeout(r, 200));
      }
    });
    if (why) return why;
  }
  return undefined;
}

/** A server (of the same data center first, then of the others) holding `key` with the registry's digest. */
async function sourceOf(targets: Target[], d: Divergence, key: Buffer, entry: Entry, timeoutMs: number): Promise<{ server: string; value: Buffer; ttl: number } | undefined> {
  const order = [...targets.filter((t) => t.dc === d.dc), ...targets.filter((t) => t.dc !== d.dc)];
  for (const t of order) {
    for (const [i, server] of t.servers.entries()) {
      if (server === d.server || !t.route.holds(i, key)) continue;
      const c = new MetaClient(server, timeoutMs);
      try {
        const [v] = await c.getWithTtl([key]);
        if (v && v.ttl !== 0 && md5(v.value) === entry.md5) return { server, value: v.value, ttl: v.ttl };
      } catch {
        // That server does not answer: try the next.
      } finally {
        c.close();
      }
    }
  }
  return undefined;
}

/**
 * Missing or wrong: the registry's value copied from a server that holds it (the wrong one
 * deleted first), with `add`, so a write that gets there meanwhile wins. Anything else wrong is
 * deleted, and readers fill it again.
 */
async function repair(targets: Target[], d: Divergence, registry: Map<string, Entry>, timeoutMs: number): Promise<string> {
  const key = Buffer.from(d.keyHex, 'hex');
  const entry = registry.get(key.toString('latin1'));
  const c = new MetaClient(d.server, timeoutMs);
  try {
    if ((d.problem === 'missing' || d.problem === 'wrong value') && entry) {
      const source = await sourceOf(targets, d, key, entry, timeoutMs);
      if (d.problem === 'wrong value') await c.deleteKeys([key]);
      if (!source) return d.problem === 'wrong value' ? 'deleted; no server holds the registry’s value to copy (readers fill it)' : 'not repaired: no server holds the registry’s value to copy (readers fill it)';
      await c.addWithTtl([{ key, value: source.value, ttl: source.ttl }]);
      return `copied from ${source.server}`;
    }
    await c.deleteKeys([key]);
    return 'deleted';
  } finally {
    c.close();
  }
}

export async function verify(config: ResolvedConfig, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const timeoutMs = opts.timeoutMs ?? config.memcached.timeoutMs * 5;
  const targets = targetsOf(config).filter((t) => !opts.datacenters || opts.datacenters.includes(t.dc));
  const listAll = opts.sample === undefined;
  // Where the primary's binlog ends before anything is looked at: what was committed before.
  const headConn = await connectMysql(mysqlFor(config.mysql, 'admin'));
  let head: Position | null;
  try {
    head = await currentBinlogPosition(headConn).catch(() => null);
  } finally {
    await headConn.end();
  }
  const registry = await readRegistry(config, opts);
  const keys = [...registry.values()].map((e) => e.key);
  const total = keys.length * targets.reduce((n, t) => n + t.servers.length, 0);
  let done = 0;
  const first = await look(targets, registry, keys, listAll, timeoutMs, (n) => opts.progress?.((done += n), total));
  const result: VerifyResult = { keys: keys.length, servers: targets.reduce((n, t) => n + t.servers.length, 0), divergent: [], settled: 0 };
  if (first.length === 0) return result;

  // Again, once the pipeline has applied what was committed before the first look.
  const why = await settle(config, head, opts.settleTimeoutMs ?? 60_000);
  if (why) result.unsettled = why;
  const again = [...new Map(first.map((d) => [d.keyHex, Buffer.from(d.keyHex, 'hex')])).values()];
  const fresh = await readRegistry(config, {}, again);
  const second = await look(targets, fresh, again, false, timeoutMs);
  // What the first look found only by listing a server (not in the registry) is looked at again as listed.
  const listedAgain = first.filter((d) => d.problem === 'present, not in the registry' || d.problem === 'on a server it does not belong on');
  const secondKeys = new Set(second.map((d) => `${d.dc} ${d.server} ${d.keyHex}`));
  // A key not in the registry is judged only when listed; look at those servers directly.
  for (const d of listedAgain) {
    if (fresh.has(Buffer.from(d.keyHex, 'hex').toString('latin1')) || secondKeys.has(`${d.dc} ${d.server} ${d.keyHex}`)) continue;
    const c = new MetaClient(d.server, timeoutMs);
    try {
      const [v] = await c.getWithTtl([Buffer.from(d.keyHex, 'hex')]);
      if (v) second.push(d);
    } finally {
      c.close();
    }
  }
  result.divergent = second;
  result.settled = first.length - second.length;
  if (opts.repair) for (const d of result.divergent) d.repaired = await repair(targets, d, fresh, timeoutMs);
  return result;
}
