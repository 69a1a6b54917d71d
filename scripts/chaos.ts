/**
 * `npm run chaos`: the pipeline under faults, checked by a checker that shares none of its code.
 *
 * On a private stack of its own (ports 23400-23499 by default, data under .stack/chaos), it
 * runs the real CLI processes: two tailers and two worker groups per data center (in each pair
 * one holds the lease in Redis and the other stands by). A randomized workload (sets, overwrites,
 * deletes, short TTLs, multi-row transactions, rollbacks and namespace flushes over a few
 * thousand keys in several namespaces, from several connections) runs, with now and then a bulk
 * transaction (one INSERT ... SELECT of 50,000-500,000 rows, some of them over the workload's
 * keys; the first one's namespace is flushed soon after), while faults are injected at random
 * times:
 *
 *   tailer          kill -9 of the active tailer (the standby takes over), restarted
 *   tailer-stop     SIGSTOP of the active tailer past its lease: the standby takes over and
 *                   writes, then SIGCONT; the stale one must find its lease lost and stand by
 *   workers         kill -9 of one data center's active worker group (the standby takes over),
 *                   restarted
 *   workers-stop    SIGSTOP of one data center's active worker group past its lease, as for the
 *                   tailer
 *   redis           kill -9 of Redis, restarted from its AOF
 *   mariadb         kill -9 of MariaDB, restarted
 *   memcached-kill  kill -9 of one memcached server, restarted empty
 *   memcached-stop  SIGSTOP of one memcached server for 3 client timeouts, then SIGCONT
 *   dc-outage       every memcached server of one data center stopped (SIGSTOP) for a minute
 *
 * With `--ketama`, east has three servers and shards keys over them on a ketama ring with
 * replicas 2 (every key on two of the three); the checker, the sentinel and the bulk watches then
 * expect each key on exactly the servers it belongs on, and nothing of it elsewhere.
 *
 * With `--sites`, the data centers are in two sites (scripts/two-sites.ts): `east` reads the
 * primary through the stack's Redis; `west` has a Redis of its own and reads a MariaDB replica
 * of the primary that replicates through a WAN link (a latency proxy) the run can cut. Each site
 * has its own pair of tailers; the tailer, tailer-stop and redis faults pick a site. Three
 * more kinds:
 *
 *   wan-cut         the link between the sites carries nothing for 3-8 s, then heals
 *   replica         kill -9 of west's replica, restarted (replication resumes where it was)
 *   replica-stop    the replica stops applying until west's tailer reads the primary instead
 *                   (fallbackBehind 500), then goes on; a tailer that does not switch within
 *                   30 s is a PROBLEM
 *
 * Every kind is injected once (in random order) before any is repeated, even if that takes a
 * little past the duration. The active tailer or worker group is the lease holder in Redis. The
 * workload starts only once the tailer has saved its first checkpoint (before that, writes would
 * never be tailed). A pipeline process that exits by itself is restarted, as a supervisor would,
 * and reported as a PROBLEM, as is a paused lease holder that was not taken over or did not stand
 * by once continued; any of them fails the run, as a divergent key does.
 *
 * Then it lets the pipeline drain and compares every server of every data center with the
 * state MySQL committed (the key registry: value md5 and expiry per key, plus every key the
 * workload and the bulk transactions wrote, which must be absent unless the registry holds
 * them), prints the faults injected, the bulk transactions and `divergent keys: N`, and exits 0
 * only when N is 0.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import mysql, { type Connection } from 'mysql2/promise';
import { loadConfig } from '../src/config/load.js';
import { serversOf, type RedisConfig, type ResolvedConfig } from '../src/config/schema.js';
import { siteOfDatacenter, sitesOf } from '../src/config/sites.js';
import { withRedis } from '../src/coordination/redis.js';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { connectMysql } from '../src/registry/mysql.js';
import { installAll } from '../src/registry/schema-installer.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { MemcachedTextClient } from './memcached-text.js';
import { check, holdsOf, mcreplStatus, Proc, sleep, waitForLog, type Holds } from './harness.js';
import { startWestSite, type WestSite } from './two-sites.js';
import {
  down,
  killMariadb,
  killMemcached,
  killRedis,
  memcachedPid,
  repoRoot,
  restartMemcached,
  stackEnv,
  stackLayout,
  startMariadb,
  startRedis,
  up,
  type StackLayout,
} from './stack.js';

// ---------------------------------------------------------------------------------------------
// Options

const seconds = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number of seconds greater than 0');
  return n;
};
const count = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number greater than 0');
  return n;
};
const rowRange = (v: string): { min: number; max: number } => {
  const m = /^(\d+)(?:-(\d+))?$/.exec(v);
  const min = Number(m?.[1]);
  const max = Number(m?.[2] ?? m?.[1]);
  if (!m || min < 1 || max < min) throw new InvalidArgumentError('expected a number of rows, or min-max (e.g. 50000-500000)');
  return { min, max };
};

const program = new Command()
  .name('npm run chaos --')
  .description('Run the pipeline under randomly injected faults, then check every memcached server against MySQL.')
  .option('--duration <seconds>', 'how long the workload and the faults run', seconds, 300)
  .option('--dc-outage <seconds>', "how long one data center's memcached stay stopped (default: a minute, capped at 40% of the duration)", seconds)
  .option('--keys <n>', 'distinct keys', count, 3000)
  .option('--namespaces <n>', 'namespaces the keys are spread over', count, 4)
  .option('--connections <n>', 'writer connections', count, 4)
  .option('--rate <ops>', 'target statements per second over all connections', count, 300)
  .option('--seed <hex>', 'random seed (printed at the start; reuse it to replay the same schedule)')
  .option('--bulk-every <seconds>', 'mean time between bulk transactions (the first comes at 15-30% of the duration; none in the last quarter)', seconds, 90)
  .addOption(new Option('--bulk-rows <min-max>', 'rows of each bulk transaction, drawn between min and max').argParser(rowRange).default({ min: 50_000, max: 500_000 }, '50000-500000'))
  .option('--no-bulk', 'no bulk transactions')
  .option('--port-base <port>', 'first port of the private stack', count, 23400)
  .option('--keep-stack', 'leave the private stack running afterwards')
  .option('--ketama', 'east shards over three servers: routing ketama (fnv1a_64, named servers, weights 1/1/2), replicas 2; each key is checked on the servers it belongs on')
  .option('--sites', "two sites: west with its own Redis, reading a replica of the primary across a WAN link that the run cuts (more fault kinds: wan-cut, replica, replica-stop)")
  .addHelpText(
    'after',
    '\nExit codes: 0 no divergent key; 1 divergent keys or the pipeline did not drain; 2 bad usage.\n' +
      'A pipeline process that exits by itself is restarted and reported as a PROBLEM, as is a paused lease holder\nthat no standby took over or that did not stand by once continued; any of them fails the run.',
  )

interface Options {
  duration: number;
  dcOutage?: number;
  keys: number;
  namespaces: number;
  connections: number;
  rate: number;
  bulkEvery: number;
  bulkRows: { min: number; max: number };
  bulk: boolean;
  seed?: string;
  portBase: number;
  keepStack?: boolean;
  sites?: boolean;
  ketama?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const t0 = Date.now();
const clock = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`;
const say = (msg: string) => process.stdout.write(`[chaos ${clock()}] ${msg}\n`);

/** A small seeded PRNG (mulberry32), so a schedule can be replayed with --seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// The workload

interface WorkloadStats {
  statements: number;
  sets: number;
  ttlSets: number;
  inserts: number;
  deletes: number;
  transactions: number;
  rollbacks: number;
  flushes: number;
  errors: number;
}

class Workload {
  readonly stats: WorkloadStats = { statements: 0, sets: 0, ttlSets: 0, inserts: 0, deletes: 0, transactions: 0, rollbacks: 0, flushes: 0, errors: 0 };
  /** When a flush of each namespace was last asked for. */
  readonly flushedAt = new Map<number, number>();
  /** Namespaces not to flush for now (a bulk load in them is being timed), with how many hold each. */
  private readonly spared = new Map<number, number>();

  spare(ns: number, on: boolean): void {
    const n = (this.spared.get(ns) ?? 0) + (on ? 1 : -1);
    if (n > 0) this.spared.set(ns, n);
    else this.spared.delete(ns);
  }
  private stopping = false;
  private seq = 0;

  constructor(
    private readonly writer: mysql.ConnectionOptions,
    private readonly admin: mysql.ConnectionOptions,
    private readonly opts: Options,
    readonly tag: string,
    private readonly random: () => number,
  ) {}

  key(i: number): { ns: number; key: string } {
    return { ns: (i % this.opts.namespaces) + 1, key: `${this.tag}:${i}` };
  }

  private pick(): { ns: number; key: string } {
    return this.key(Math.floor(this.random() * this.opts.keys));
  }

  private value(): string {
    const len = 8 + Math.floor(this.random() * 200);
    return `${++this.seq}:${randomBytes(Math.ceil(len / 2)).toString('hex').slice(0, len)}`;
  }

  /** One connection's loop; reconnects after errors (MariaDB restarts) and goes on. */
  private async connectionLoop(perConnRate: number): Promise<void> {
    let conn: Connection | undefined;
    const interval = 1000 / perConnRate;
    let next = Date.now();
    while (!this.stopping) {
      next += interval;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -1000) next = Date.now();
      try {
        conn ??= await mysql.createConnection({ ...this.writer, connectTimeout: 2_000 });
        await this.step(conn);
      } catch {
        this.stats.errors++;
        await conn?.destroy();
        conn = undefined;
        await sleep(200);
      }
    }
    await conn?.end().catch(() => undefined);
  }

  private async step(conn: Connection): Promise<void> {
    const r = this.random();
    const { ns, key } = this.pick();
    this.stats.statements++;
    if (r < 0.5) {
      this.stats.sets++;
      await conn.query('CALL set_key(?, ?, ?, 0)', [ns, key, this.value()]);
    } else if (r < 0.65) {
      this.stats.ttlSets++;
      await conn.query('CALL set_key(?, ?, ?, ?)', [ns, key, this.value(), 1 + Math.floor(this.random() * 4)]);
    } else if (r < 0.72) {
      // A plain INSERT into the storage table (the trigger keeps the registry), a set or a delete.
      this.stats.inserts++;
      if (this.random() < 0.7) await conn.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (?, ?, ?, 0)', [ns, key, this.value()]);
      else await conn.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (?, ?, 'delete')", [ns, key]);
    } else if (r < 0.85) {
      this.stats.deletes++;
      await conn.query('CALL delete_key(?, ?)', [ns, key]);
    } else {
      // Several writes in one transaction, some of them to the same key; one in ten rolled back.
      this.stats.transactions++;
      await conn.query('START TRANSACTION');
      for (let i = 0; i < 4; i++) {
        const k = i === 2 ? { ns, key } : this.pick();
        if (this.random() < 0.8) await conn.query('CALL set_key(?, ?, ?, 0)', [k.ns, k.key, this.value()]);
        else await conn.query('CALL delete_key(?, ?)', [k.ns, k.key]);
      }
      if (this.random() < 0.1) {
        this.stats.rollbacks++;
        await conn.query('ROLLBACK');
      } else {
        await conn.query('COMMIT');
      }
    }
  }

  /** A namespace flush every few seconds, through the procedure, as the operators' account. */
  private async flushLoop(): Promise<void> {
    while (!this.stopping) {
      await sleep(4_000 + this.random() * 8_000);
      if (this.stopping) break;
      let conn: Connection | undefined;
      try {
        const ns = 1 + Math.floor(this.random() * this.opts.namespaces);
        if (this.spared.has(ns)) continue;
        conn = await mysql.createConnection({ ...this.admin, connectTimeout: 2_000 });
        this.flushedAt.set(ns, Date.now());
        await conn.query('CALL flush_namespace(?)', [ns]);
        this.stats.flushes++;
      } catch {
        this.stats.errors++;
      } finally {
        await conn?.end().catch(() => undefined);
      }
    }
  }

  private running: Promise<unknown> | undefined;
  start(): void {
    const perConn = this.opts.rate / this.opts.connections;
    this.running = Promise.all([...Array.from({ length: this.opts.connections }, () => this.connectionLoop(perConn)), this.flushLoop()]);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
  }
}

// ---------------------------------------------------------------------------------------------
// Bulk transactions

interface BulkRecord {
  n: number;
  at: string;
  rows: number;
  /** Rows that overwrite workload keys (one row in 50). */
  overWorkload: number;
  ns: number;
  committed: boolean;
  error?: string;
  /** How long the INSERT ... SELECT took to commit. */
  sqlS?: number;
  /** From its commit until its last rows were on every server (undefined: not seen). */
  appliedS?: number;
  appliedNote?: string;
  flush?: { at: string; sqlS?: number; goneS?: number; note?: string; error?: string };
}

/** Rows of a bulk transaction that overwrite a workload key: one in this many. */
const BULK_OVERLAP_EVERY = 50;
/** Rows watched to tell when a bulk transaction (or its flush) reached every server. */
const BULK_SAMPLE = 32;

/**
 * Now and then one connection writes a single transaction of many rows: `INSERT INTO mc_storage
 * ... SELECT ... FROM seq_1_to_N` (MariaDB's sequence engine), as the installer account (the
 * writer's may not read seq tables). Every 50th row overwrites a workload key, so its order
 * against the small transactions around it is checked too; the others are keys of its own in one
 * namespace. The first committed one's namespace is flushed soon after. How long each took to
 * reach every server is measured on its last rows: ops of one partition are applied in order, and
 * 32 keys spread over every partition (of a few), so when they are everywhere the whole
 * transaction is.
 */
class BulkLoads {
  readonly records: BulkRecord[] = [];
  private stopping = false;
  private watching = true;
  private running: Promise<void> | undefined;
  private readonly watches: Promise<void>[] = [];

  constructor(
    private readonly installer: mysql.ConnectionOptions,
    private readonly admin: mysql.ConnectionOptions,
    private readonly servers: string[],
    private readonly holds: Holds,
    private readonly opts: Options,
    private readonly workload: Workload,
    private readonly random: () => number,
  ) {}

  key(n: number, seq: number): string {
    return `${this.workload.tag}:b${n}:${seq}`;
  }

  private value(n: number, seq: number): string {
    return `bulk${n}.${seq}${'v'.repeat(seq % 32)}`;
  }

  /** Every key of its own that a committed bulk transaction wrote (the checker checks them all). */
  keys(): string[] {
    const out: string[] = [];
    for (const r of this.records) {
      if (!r.committed) continue;
      for (let seq = 1; seq <= r.rows; seq++) if (seq % BULK_OVERLAP_EVERY !== 0) out.push(this.key(r.n, seq));
    }
    return out;
  }

  start(durationMs: number): void {
    this.running = this.loop(durationMs);
  }

  /** Waits for the bulk transaction under way (and the flush after it), not for the measurements. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
  }

  /** Ends the measurements still waiting (once the pipeline has drained, nothing more arrives). */
  async stopWatching(): Promise<void> {
    this.watching = false;
    await Promise.all(this.watches);
  }

  private async loop(durationMs: number): Promise<void> {
    const startedAt = Date.now();
    // None in the last quarter (or 20 s): a big one takes a while to commit and to drain.
    const lastStart = startedAt + durationMs - Math.max(20_000, durationMs / 4);
    let next = startedAt + durationMs * (0.15 + 0.15 * this.random());
    let n = 0;
    let flushed = false;
    while (!this.stopping) {
      while (!this.stopping && Date.now() < next) await sleep(Math.min(500, next - Date.now()));
      if (this.stopping || Date.now() > lastStart) return;
      const rec = await this.runOne(++n);
      if (!rec.committed) {
        // A fault (MariaDB killed, a deadlock): try again soon, while there is time.
        next = Date.now() + 3_000;
        continue;
      }
      if (!flushed) {
        flushed = true;
        await this.flushAfter(rec);
      }
      next = Date.now() + this.opts.bulkEvery * 1000 * (0.5 + this.random());
    }
  }

  private async runOne(n: number): Promise<BulkRecord> {
    const { min, max } = this.opts.bulkRows;
    const rows = min + Math.floor(this.random() * (max - min + 1));
    const ns = 1 + Math.floor(this.random() * this.opts.namespaces);
    const offset = Math.floor(this.random() * this.opts.keys);
    const rec: BulkRecord = { n, at: clock().trim(), rows, overWorkload: Math.floor(rows / BULK_OVERLAP_EVERY), ns, committed: false };
    this.records.push(rec);
    say(`bulk #${n}: one INSERT ... SELECT of ${rows} rows into namespace ${ns} (${rec.overWorkload} of them over workload keys)`);
    const k = this.opts.keys;
    const started = Date.now();
    let conn: Connection | undefined;
    try {
      conn = await mysql.createConnection({ ...this.installer, connectTimeout: 2_000 });
      // A workload key i lives in namespace (i % namespaces) + 1 (Workload.key); the rest are
      // `<tag>:b<n>:<seq>`, with a TTL (an hour) on one row in ten.
      await conn.query(
        `INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire)
         SELECT IF(seq % ${BULK_OVERLAP_EVERY} = 0, (seq DIV ${BULK_OVERLAP_EVERY} + ?) % ? % ? + 1, ?),
                IF(seq % ${BULK_OVERLAP_EVERY} = 0, CONCAT(?, ':', (seq DIV ${BULK_OVERLAP_EVERY} + ?) % ?), CONCAT(?, ':b', ?, ':', seq)),
                CONCAT('bulk', ?, '.', seq, REPEAT('v', seq % 32)),
                IF(seq % 10 = 7, 3600, 0)
         FROM seq_1_to_${rows}`,
        [offset, k, this.opts.namespaces, ns, this.workload.tag, offset, k, this.workload.tag, n, n],
      );
      rec.committed = true;
      rec.sqlS = (Date.now() - started) / 1000;
      say(`bulk #${n}: committed after ${rec.sqlS.toFixed(1)} s`);
    } catch (err) {
      rec.error = err instanceof Error ? err.message : String(err);
      say(`bulk #${n}: failed (${rec.error}); nothing of it was committed`);
      await conn?.destroy();
      conn = undefined;
    } finally {
      await conn?.end().catch(() => undefined);
    }
    if (rec.committed) this.watches.push(this.measureApplied(rec, Date.now()));
    return rec;
  }

  /** The last rows of its own: BULK_SAMPLE keys with their values. */
  private sample(rec: BulkRecord): { key: string; value: string }[] {
    const out: { key: string; value: string }[] = [];
    for (let seq = rec.rows; seq > 0 && out.length < BULK_SAMPLE; seq--) if (seq % BULK_OVERLAP_EVERY !== 0) out.push({ key: this.key(rec.n, seq), value: this.value(rec.n, seq) });
    return out;
  }

  private applied = new Map<number, Promise<void>>();

  /** Times a committed bulk load until it is everywhere; the workload leaves its namespace alone meanwhile. */
  private measureApplied(rec: BulkRecord, since: number): Promise<void> {
    const sample = this.sample(rec);
    this.workload.spare(rec.ns, true);
    const p = this.watch(sample, 'present', since, () => (this.workload.flushedAt.get(rec.ns) ?? 0) > since).then((r) => {
      if (typeof r === 'number') rec.appliedS = r;
      else rec.appliedNote = r;
      this.workload.spare(rec.ns, false);
    });
    this.applied.set(rec.n, p);
    return p;
  }

  /**
   * Flushes the namespace of a bulk transaction once it is everywhere (or after 30 s), as an
   * operator would; again if MariaDB was killed meanwhile (a flush is chunked: part of it may
   * have been done).
   */
  private async flushAfter(rec: BulkRecord): Promise<void> {
    await Promise.race([this.applied.get(rec.n), sleep(30_000)]);
    await sleep(this.random() * 2_000);
    for (let attempt = 1; ; attempt++) {
      const flush: NonNullable<BulkRecord['flush']> = { at: clock().trim() };
      rec.flush = flush;
      say(`bulk #${rec.n}: flushing its namespace ${rec.ns}`);
      const started = Date.now();
      let conn: Connection | undefined;
      try {
        conn = await mysql.createConnection({ ...this.admin, connectTimeout: 2_000 });
        this.workload.flushedAt.set(rec.ns, started);
        await conn.query('CALL flush_namespace(?)', [rec.ns]);
        flush.sqlS = (Date.now() - started) / 1000;
        say(`bulk #${rec.n}: flush_namespace(${rec.ns}) returned after ${flush.sqlS.toFixed(1)} s`);
        const since = Date.now();
        this.watches.push(
          this.watch(this.sample(rec), 'absent', since, () => false).then((r) => {
            if (typeof r === 'number') flush.goneS = r;
            else flush.note = r;
          }),
        );
        return;
      } catch (err) {
        flush.error = err instanceof Error ? err.message : String(err);
        say(`bulk #${rec.n}: the flush failed (${flush.error})${attempt < 5 ? '; again in 3 s' : ''}`);
        await conn?.destroy();
        conn = undefined;
        if (attempt >= 5) return;
        await sleep(3_000);
      } finally {
        await conn?.end().catch(() => undefined);
      }
    }
  }

  /**
   * Seconds from `since` until every server holds the sample (`present`, with its values) or none
   * of it (`absent`); or why that was not seen.
   */
  private async watch(sample: { key: string; value: string }[], want: 'present' | 'absent', since: number, superseded: () => boolean): Promise<number | string> {
    const clients = this.servers.map((s) => new MemcachedTextClient(s, 2_000));
    const keys = sample.map((s) => s.key);
    try {
      while (this.watching) {
        const got = await Promise.all(clients.map((c) => c.getMany(keys).catch(() => undefined)));
        const seenAt = Date.now();
        const done = got.every((g, i) => g !== undefined && (want === 'present' ? sample.every((s) => !this.holds(this.servers[i]!, s.key) || g.get(s.key)?.toString() === s.value) : g.size === 0));
        if (done) return (seenAt - since) / 1000;
        if (superseded()) return 'its namespace was flushed before it was seen on every server';
        await sleep(250);
      }
      return 'not seen on every server before the pipeline drained';
    } finally {
      for (const c of clients) c.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

interface FaultRecord {
  at: string;
  kind: string;
  target: string;
  detail: string;
}

const FAULT_KINDS = ['tailer', 'tailer-stop', 'workers', 'workers-stop', 'redis', 'mariadb', 'memcached-kill', 'memcached-stop'] as const;
/** With --sites, as well. */
const SITE_FAULT_KINDS = ['wan-cut', 'replica', 'replica-stop'] as const;
type FaultKind = (typeof FAULT_KINDS)[number] | (typeof SITE_FAULT_KINDS)[number] | 'dc-outage';

/** Roughly how long a fault takes (ms), so that every kind fits a short run. */
function faultMs(kind: FaultKind, leaseTtlMs: number): number {
  switch (kind) {
    case 'tailer-stop':
    case 'workers-stop':
      return leaseTtlMs + 7_000;
    case 'mariadb':
    case 'replica':
    case 'wan-cut':
      return 6_000;
    case 'replica-stop':
      return 10_000;
    default:
      return 3_000;
  }
}

/** What a file holds from byte `from` on ('' if it is gone). */
function readFrom(file: string, from: number): string {
  try {
    return fs.readFileSync(file).subarray(from).toString();
  } catch {
    return '';
  }
}

/** The size of a file now (where to start looking for what a process logs next). */
function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

class Faults {
  readonly injected: FaultRecord[] = [];
  /** What went wrong in the pipeline's processes themselves (a stale one that did not stand by). */
  readonly problems: string[] = [];
  /** Stopped pids, with how many suspensions hold each (a server stop inside a DC outage nests). */
  private readonly stopped = new Map<number, number>();

  constructor(
    private readonly layout: StackLayout,
    /** Each site's tailers (one active, the other standing by). */
    private readonly tailers: Map<string, Proc[]>,
    /** Each data center's worker groups (one active, the others standing by). */
    private readonly workers: Map<string, Proc[]>,
    private readonly config: ResolvedConfig,
    private readonly random: () => number,
    /** With --sites: the second site, its replica and the WAN link. */
    private readonly west?: WestSite,
  ) {}

  /** A site's Redis and key names. */
  private siteRedis(name: string): { redis: RedisConfig; keys: RedisKeys; layout: StackLayout } {
    const site = sitesOf(this.config).find((x) => x.name === name)!;
    return { redis: site.config.redis, keys: new RedisKeys(site.config.redis.prefix), layout: name === 'west' && this.west ? this.west.redisLayout : this.layout };
  }

  /** A site at random (the only one without --sites, drawing nothing, so old seeds replay alike). */
  private pickSite(): string {
    const names = [...this.tailers.keys()];
    return names.length === 1 ? names[0]! : names[Math.floor(this.random() * names.length)]!;
  }

  private record(kind: FaultKind, target: string, detail: string): void {
    this.injected.push({ at: clock().trim(), kind, target, detail });
    say(`fault: ${kind} ${target} (${detail})`);
  }

  private pause = () => 1_000 + this.random() * 2_000;

  private pickDc(): string {
    const dcs = [...this.workers.keys()];
    return dcs[Math.floor(this.random() * dcs.length)]!;
  }

  /**
   * The owner of a lease in Redis (`host:pid:nonce`) and the ms it has left, or null (none, or
   * Redis not answering).
   */
  private async owner(redis: RedisConfig, leaseKey: string): Promise<{ owner: string; pttl: number } | null> {
    const get = withRedis(redis, 'chaos', async (r) => {
      const [owner, pttl] = await Promise.all([r.get(leaseKey), r.pttl(leaseKey)]);
      return owner ? { owner, pttl } : null;
    }).catch(() => null);
    return Promise.race([get, sleep(3_000).then(() => null)]);
  }

  /**
   * The process of `procs` holding the lease, waiting up to `timeoutMs` for one to hold it (just
   * after a fault, a standby may still be taking over), and for a different owner than `not`.
   * With `renewedWithin`, only a lease renewed that recently counts: a holder that has given it
   * up already (its event loop was blocked past the lease's validity) leaves its name in Redis
   * until the key expires, and pausing it then would test nothing.
   */
  private async holder(redis: RedisConfig, leaseKey: string, procs: Proc[], timeoutMs: number, opts: { not?: string; renewedWithin?: { ttlMs: number; ms: number } } = {}): Promise<{ proc: Proc; owner: string } | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = await this.owner(redis, leaseKey);
      const owner = got?.owner;
      const pid = owner ? Number(owner.split(':').at(-2)) : Number.NaN;
      const proc = procs.find((p) => p.pid === pid);
      const fresh = !opts.renewedWithin || (got !== null && got.pttl > opts.renewedWithin.ttlMs - opts.renewedWithin.ms);
      if (owner && proc && owner !== opts.not && fresh) return { proc, owner };
      if (Date.now() >= deadline) return undefined;
      await sleep(100);
    }
  }

  async inject(kind: FaultKind, dcOutageMs: number): Promise<void> {
    switch (kind) {
      case 'tailer': {
        const name = this.pickSite();
        const site = this.siteRedis(name);
        const tailers = this.tailers.get(name)!;
        const active = await this.holder(site.redis, site.keys.tailerLease, tailers, 15_000);
        const victim = active?.proc ?? tailers.find((t) => t.pid !== undefined);
        if (!victim) return this.noneRunning(kind, 'tailer', tailers);
        const pid = victim.pid;
        await victim.kill('SIGKILL');
        this.record(kind, victim.name, `kill -9 of the ${active ? 'active' : 'first running'} tailer (pid ${pid}); the standby takes over`);
        await sleep(this.pause());
        if (!this.halted) victim.start();
        return;
      }
      case 'workers': {
        const dc = this.pickDc();
        const procs = this.workers.get(dc)!;
        const site = this.siteRedis(siteOfDatacenter(this.config, dc).name);
        const active = await this.holder(site.redis, site.keys.workerLease(dc), procs, 15_000);
        const victim = active?.proc ?? procs.find((p) => p.pid !== undefined);
        if (!victim) return this.noneRunning(kind, dc, procs);
        const pid = victim.pid;
        await victim.kill('SIGKILL');
        const ms = this.pause();
        this.record(kind, `${dc} ${victim.name}`, `kill -9 of the ${active ? 'active' : 'first running'} worker group (pid ${pid}); the standby takes over; restarted after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) victim.start();
        return;
      }
      case 'tailer-stop': {
        const name = this.pickSite();
        const site = this.siteRedis(name);
        return this.stopActive(kind, this.tailers.size > 1 ? `tailer ${name}` : 'tailer', this.tailers.get(name)!, site.redis, site.keys.tailerLease, this.config.tailer.leaseTtlMs);
      }
      case 'workers-stop': {
        const dc = this.pickDc();
        const site = this.siteRedis(siteOfDatacenter(this.config, dc).name);
        return this.stopActive(kind, dc, this.workers.get(dc)!, site.redis, site.keys.workerLease(dc), this.config.worker.leaseTtlMs);
      }
      case 'redis': {
        const name = this.pickSite();
        const { layout } = this.siteRedis(name);
        await killRedis(layout);
        const ms = this.pause();
        this.record(kind, `${this.tailers.size > 1 ? `${name} ` : ''}127.0.0.1:${layout.redis.port}`, `kill -9, restarted from its AOF after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) await startRedis(layout);
        return;
      }
      case 'wan-cut': {
        const west = this.west!;
        const ms = 3_000 + this.random() * 5_000;
        await west.wan.cut();
        await sleep(ms);
        await west.wan.heal();
        this.record(kind, 'east <-> west', `the WAN link (replication, and west's way to the primary) carried nothing for ${(ms / 1000).toFixed(1)} s, then healed`);
        return;
      }
      case 'replica': {
        const west = this.west!;
        await west.replica.kill();
        const ms = this.pause();
        this.record(kind, `west 127.0.0.1:${west.replica.inst.port}`, `kill -9 of west's replica, restarted after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) await west.replica.restart();
        return;
      }
      case 'replica-stop':
        return this.replicaStandsStill();
      case 'mariadb': {
        await killMariadb(this.layout.mariadb);
        const ms = this.pause();
        this.record(kind, `127.0.0.1:${this.layout.mariadb.port}`, `kill -9, restarted after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) await startMariadb(this.layout.mariadb);
        return;
      }
      case 'memcached-kill': {
        const m = this.layout.memcached[Math.floor(this.random() * this.layout.memcached.length)]!;
        await killMemcached(this.layout, m.name);
        if (!this.halted) await restartMemcached(this.layout, m.name);
        this.record(kind, `${m.name} 127.0.0.1:${m.port}`, 'kill -9, restarted empty');
        return;
      }
      case 'memcached-stop': {
        const m = this.layout.memcached[Math.floor(this.random() * this.layout.memcached.length)]!;
        const ms = this.config.memcached.timeoutMs * 3;
        await this.suspend([m.name], ms);
        this.record(kind, `${m.name} 127.0.0.1:${m.port}`, `SIGSTOP for ${(ms / 1000).toFixed(1)} s (client timeout ${this.config.memcached.timeoutMs} ms), then SIGCONT`);
        return;
      }
      case 'dc-outage': {
        const dc = this.pickDc();
        const names = this.layout.memcached.filter((m) => m.dc === dc).map((m) => m.name);
        say(`fault: dc-outage ${dc} begins (${names.join(', ')} stopped for ${(dcOutageMs / 1000).toFixed(0)} s)`);
        await this.suspend(names, dcOutageMs);
        this.record(kind, dc, `every memcached server (${names.join(', ')}) stopped for ${(dcOutageMs / 1000).toFixed(0)} s, then continued`);
        return;
      }
    }
  }

  /** Every process of a pair exited by itself: a problem of the pipeline, not a fault. */
  private noneRunning(kind: FaultKind, target: string, procs: Proc[]): void {
    this.record(kind, target, `skipped: none of ${procs.map((p) => p.name).join(', ')} is running`);
    this.problems.push(`${clock().trim()} ${procs.map((p) => `${p.name} exited (${p.child?.exitCode ?? p.child?.signalCode}; see ${p.logFile})`).join(', ')}`);
  }

  /**
   * SIGSTOP of the lease holder among `procs` until another of them has taken the lease over and
   * worked for a few seconds, then SIGCONT. The stale one wakes up believing for a moment that it
   * is active: it must find its lease lost (and log it) before it writes anything, and go back to
   * standing by. Whether it wrote nothing after its successor is for the checker to tell.
   */
  private async stopActive(kind: 'tailer-stop' | 'workers-stop', target: string, procs: Proc[], redis: RedisConfig, leaseKey: string, ttlMs: number): Promise<void> {
    const what = kind === 'tailer-stop' ? 'tailer' : 'worker group';
    // Renewed within the last half TTL (renewals come every third): it is the one at work.
    const active = await this.holder(redis, leaseKey, procs, 15_000, { renewedWithin: { ttlMs, ms: ttlMs / 2 } });
    if (!active) {
      this.record(kind, target, `skipped: no ${what} held the lease within 15 s`);
      return;
    }
    const { proc, owner } = active;
    const pid = proc.pid!;
    const child = proc.child!;
    const logFrom = fileSize(proc.logFile);
    const stoppedAt = Date.now();
    this.hold(pid);
    let successor: { proc: Proc; owner: string } | undefined;
    let takeoverMs = 0;
    try {
      successor = await this.holder(redis, leaseKey, procs, ttlMs * 4 + 5_000, { not: owner });
      takeoverMs = Date.now() - stoppedAt;
      // The successor works meanwhile; the stale one's view of the world grows older.
      if (successor) await sleep(2_000 + this.random() * 2_000);
    } finally {
      this.release(pid);
    }
    const stoppedMs = Date.now() - stoppedAt;
    const head = `SIGSTOP of the active ${what} (pid ${pid}) for ${(stoppedMs / 1000).toFixed(1)} s (lease ${(ttlMs / 1000).toFixed(1)} s)`;
    if (!successor) {
      this.record(kind, `${target} ${proc.name}`, `${head}; no standby took the lease over meanwhile; then SIGCONT`);
      this.problems.push(`${clock().trim()} no standby of ${procs.map((p) => p.name).join(', ')} took ${leaseKey} over from the stopped ${proc.name} within ${(stoppedMs / 1000).toFixed(0)} s`);
      return;
    }
    // Awake again: it must notice that it lost the lease, and stand by.
    const noticed = await waitForLog(proc.logFile, logFrom, /lost the lease/, 10_000);
    let after: string;
    if (child.exitCode !== null || child.signalCode !== null) {
      after = `it EXITED (${child.signalCode ?? `exit code ${child.exitCode}`}) instead of standing by (restarted)`;
    } else if (!noticed) {
      after = 'it did NOT log that it lost the lease within 10 s';
      this.problems.push(`${clock().trim()} ${proc.name} (pid ${pid}) did not log the lease it lost (${kind}); see ${proc.logFile}`);
    } else {
      after = 'it found its lease lost and stands by';
    }
    this.record(kind, `${target} ${proc.name}`, `${head}: ${successor.proc.name} took over after ${(takeoverMs / 1000).toFixed(1)} s and went on; then SIGCONT: ${after}`);
  }

  /**
   * West's replica stops applying (its SQL thread) while the primary goes on: west's tailer must
   * read the primary instead once the replica is `fallbackBehind` behind, and go on applying.
   * Then the replica applies again (the tailer goes back to it once it has caught up).
   */
  private async replicaStandsStill(): Promise<void> {
    const west = this.west!;
    const tailers = this.tailers.get('west')!;
    const from = tailers.map((t) => fileSize(t.logFile));
    const switchedLog = () => tailers.some((t, i) => readFrom(t.logFile, from[i]!).includes('reading the primary until it catches up'));
    const stoppedAt = Date.now();
    await west.replica.query('STOP SLAVE SQL_THREAD');
    let switchedMs: number | undefined;
    try {
      while (switchedMs === undefined && Date.now() - stoppedAt < 30_000 && !this.halted) {
        if (switchedLog()) switchedMs = Date.now() - stoppedAt;
        else await sleep(200);
      }
      // It reads the primary for a while before the replica goes on.
      if (switchedMs !== undefined) await sleep(2_000 + this.random() * 2_000);
    } finally {
      await west.replica.query('START SLAVE SQL_THREAD').catch((err: Error) => say(`START SLAVE SQL_THREAD failed: ${err.message}`));
    }
    const head = `west's replica applied nothing for ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s`;
    if (switchedMs === undefined) {
      this.record('replica-stop', `west 127.0.0.1:${west.replica.inst.port}`, `${head}; west's tailer did NOT read the primary meanwhile`);
      if (!this.halted) this.problems.push(`${clock().trim()} west's tailer did not read the primary within 30 s while its replica stood still; see ${tailers.map((t) => t.logFile).join(', ')}`);
      return;
    }
    this.record('replica-stop', `west 127.0.0.1:${west.replica.inst.port}`, `${head}: west's tailer read the primary after ${(switchedMs / 1000).toFixed(1)} s and went on; then the replica applied again`);
  }

  private hold(pid: number): void {
    process.kill(pid, 'SIGSTOP');
    this.stopped.set(pid, (this.stopped.get(pid) ?? 0) + 1);
  }

  private release(pid: number): void {
    const holds = (this.stopped.get(pid) ?? 1) - 1;
    if (holds > 0) this.stopped.set(pid, holds);
    else this.resume(pid);
  }

  /**
   * SIGSTOP the servers for `ms`, then SIGCONT (a server restarted meanwhile is left alone). A
   * server another suspension still holds (a stop during its data center's outage) stays stopped
   * until that one ends too.
   */
  private async suspend(names: string[], ms: number): Promise<void> {
    const pids = names.map((n) => memcachedPid(this.layout, n)).filter((p): p is number => p !== undefined);
    for (const pid of pids) this.hold(pid);
    try {
      await sleep(ms);
    } finally {
      for (const pid of pids) this.release(pid);
    }
  }

  private resume(pid: number): void {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // Gone meanwhile (killed by another fault).
    }
    this.stopped.delete(pid);
  }

  /** Interrupted: faults in progress restart nothing any more. */
  halted = false;

  /** Whatever happens, nothing stays stopped. */
  resumeAll(): void {
    for (const pid of [...this.stopped.keys()]) this.resume(pid);
  }
}

// ---------------------------------------------------------------------------------------------

/** Waits until every server holds `key` = `value`; the servers that still lack it (none: seen). */
async function waitForKeyEverywhere(servers: string[], key: string, value: string, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const clients = servers.map((s) => new MemcachedTextClient(s, 2_000));
  let lacking = servers;
  try {
    while (Date.now() < deadline) {
      const got = await Promise.all(clients.map((c) => c.get(key).catch(() => null)));
      lacking = servers.filter((_, i) => got[i]?.value.toString() !== value);
      if (lacking.length === 0) return [];
      await sleep(200);
    }
    return lacking;
  } finally {
    for (const c of clients) c.close();
  }
}

/** Waits until every site's tailer has saved a checkpoint and every data center has an active worker group. */
async function waitForPipeline(config: ResolvedConfig, timeoutMs: number): Promise<{ ok: boolean; s: number; missing: string }> {
  const started = Date.now();
  let missing = 'Redis not answering';
  while (Date.now() - started < timeoutMs) {
    const gaps = await Promise.all(
      sitesOf(config).map((site) => {
        const keys = new RedisKeys(site.config.redis.prefix);
        const where = config.sites ? ` (site ${site.name})` : '';
        return withRedis(site.config.redis, 'chaos', async (r) => {
          const g: string[] = [];
          if (!(await r.exists(keys.checkpoint))) g.push(`no checkpoint${where}`);
          for (const dc of Object.keys(site.config.datacenters)) if (!(await r.get(keys.workerLease(dc)))) g.push(`no worker group in ${dc}`);
          return g.join(', ');
        }).catch(() => `Redis${where} not answering`);
      }),
    );
    missing = gaps.filter(Boolean).join(', ');
    if (!missing) return { ok: true, s: (Date.now() - started) / 1000, missing };
    await sleep(200);
  }
  return { ok: false, s: (Date.now() - started) / 1000, missing };
}

async function waitForDrain(configFile: string, timeoutMs: number): Promise<{ drained: boolean; last: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no status';
  let calm = 0;
  while (Date.now() < deadline) {
    const status = await mcreplStatus(configFile);
    // With sites, one report per site; every site must have its tailer.
    const parts = status ? ('sites' in status ? status.sites : [status]) : [];
    const st = parts.length > 0 && parts.every((p) => p.datacenters) ? { tailer: parts.every((p) => p.tailer) ? parts.map((p) => p.tailer).join(', ') : null, datacenters: parts.flatMap((p) => p.datacenters) } : undefined;
    if (st) {
      const dcs = st.datacenters;
      const backlog = dcs.reduce((n, d) => n + d.queued.waiting + d.queued.active + d.queued.delayed, 0);
      const unhealthy = dcs.flatMap((d) => d.servers.filter((s) => s.health !== 'healthy' || s.missedOps > 0 || s.mustFlush).map((s) => `${s.address} ${s.health}${s.missedOps ? ` (${s.missedOps} missed ops)` : ''}`));
      const noWorker = dcs.filter((d) => !d.worker).map((d) => d.name);
      last = `tailer ${st.tailer ? 'active' : 'none'}, backlog ${backlog} jobs, ${unhealthy.length ? `not healthy: ${unhealthy.join(', ')}` : 'all servers healthy'}${noWorker.length ? `, no worker group: ${noWorker.join(', ')}` : ''}`;
      // Calm twice in a row, a second apart: nothing queued, nothing kept, everyone running.
      if (st.tailer && backlog === 0 && unhealthy.length === 0 && noWorker.length === 0) {
        if (++calm >= 2) return { drained: true, last };
      } else {
        calm = 0;
      }
    }
    await sleep(1_000);
  }
  return { drained: false, last };
}

function describeBulk(b: BulkRecord): string {
  const what = `${b.rows} rows into namespace ${b.ns} (${b.overWorkload} over workload keys)`;
  if (!b.committed) return `${what}: FAILED, nothing committed (${b.error})`;
  const applied = b.appliedS !== undefined ? `on every server ${b.appliedS.toFixed(1)} s after` : b.appliedNote;
  let flush = '';
  if (b.flush) {
    const gone = b.flush.goneS !== undefined ? `its keys gone from every server ${b.flush.goneS.toFixed(1)} s after` : b.flush.note;
    flush = b.flush.error ? `; flushing its namespace at ${b.flush.at} failed (${b.flush.error})` : `; its namespace flushed at ${b.flush.at} (flush_namespace took ${b.flush.sqlS!.toFixed(1)} s, ${gone})`;
  }
  return `${what}: committed in ${b.sqlS!.toFixed(1)} s, ${applied}${flush}`;
}

/** Servers that evicted items, with how many. */
async function memcachedEvictions(servers: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const s of servers) {
    const c = new MemcachedTextClient(s);
    const n = Number((await c.stats().catch(() => ({}) as Record<string, string>)).evictions ?? 0);
    c.close();
    if (n > 0) out.push(`${s} ${n}`);
  }
  return out;
}

async function main(): Promise<number> {
  program.parse(process.argv);
  const opts = program.opts<Options>();
  const seed = opts.seed ? Number.parseInt(opts.seed, 16) : randomBytes(4).readUInt32BE();
  const random = rng(seed);
  const durationMs = opts.duration * 1000;
  const dcOutageMs = Math.min((opts.dcOutage ?? 60) * 1000, durationMs * 0.4);

  const layout = stackLayout(path.join(repoRoot, '.stack', 'chaos'), opts.portBase, { east: opts.ketama ? 3 : 2, west: 2 });
  say(`seed ${seed.toString(16)}; duration ${opts.duration} s; private stack on ports ${opts.portBase}-${opts.portBase + 99} under ${path.relative(repoRoot, layout.dir)}`);
  const { started } = await up(layout);
  say(started.length ? `stack started: ${started.join(', ')}` : 'stack already running');
  // Interrupted (Ctrl-C, or the test that runs it timing out): leave nothing running behind.
  // With --sites: west's Redis, its replica and the WAN link, before the schema (it replicates).
  let west: WestSite | undefined;
  const stopStack = async () => {
    if (!opts.keepStack) await west?.stop();
    if (!opts.keepStack && started.length > 0) await down(layout);
  };
  let onInterrupt = stopStack;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping the pipeline and the private stack`);
      void onInterrupt().finally(() => process.exit(130));
    });
  }

  if (opts.sites) {
    west = await startWestSite(layout, { rttMs: 2, redisPort: opts.portBase + 90 });
    say(`site west: Redis on ${west.redisLayout.redis.port}, a replica of the primary on ${west.replica.inst.port}, replicating through the WAN link on ${west.wan.port}`);
  }
  const runId = randomBytes(3).toString('hex');
  const logDir = path.join(layout.dir, 'logs', runId);
  fs.mkdirSync(logDir, { recursive: true });
  const { config: base } = loadConfig({
    env: stackEnv(layout),
    overrides: {
      'mysql.database': `chaos_${runId}`,
      'mysql.serverId': 200_000 + (seed % 1_000_000),
      'redis.prefix': `chaos-${runId}`,
      partitions: 4,
      'datacenters.east': opts.ketama
        ? { routing: 'ketama', hash: 'fnv1a_64', replicas: 2, servers: layout.memcached.filter((m) => m.dc === 'east').map((m, i) => `127.0.0.1:${m.port}:${i === 2 ? 2 : 1} ${m.name}`) }
        : { servers: layout.memcached.filter((m) => m.dc === 'east').map((m) => `127.0.0.1:${m.port}`) },
      'datacenters.west': { servers: layout.memcached.filter((m) => m.dc === 'west').map((m) => `127.0.0.1:${m.port}`) },
      // A standby takes over within 3 s; a stopped memcached counts as down after 1 s.
      'tailer.leaseTtlMs': 3_000,
      'worker.leaseTtlMs': 3_000,
      'memcached.timeoutMs': 1_000,
      // A site's tailer looks at its replica and the primary twice a second.
      'tailer.sourceCheckMs': 500,
    },
  });
  const config: ResolvedConfig = west ? { ...base, sites: west.sites(base, { prefix: `chaos-${runId}`, fallbackBehind: 500 }) } : base;
  const configFile = writeConfigFile(config);
  const installer = await connectMysql(config.mysql, { database: false });
  await installAll(installer, config);
  for (let ns = 1; ns <= opts.namespaces; ns++) await installer.query(`CALL \`${config.mysql.database}\`.create_namespace(?, ?)`, [ns, `chaos${ns}`]);
  await installer.end();

  // Two tailers per site, two worker groups per data center.
  const tailers = new Map(
    sitesOf(config).map((site) => [site.name, ['a', 'b'].map((g) => (config.sites ? new Proc(`tailer-${site.name}-${g}`, ['-c', configFile, '--site', site.name, 'tailer'], logDir) : new Proc(`tailer-${g}`, ['-c', configFile, 'tailer'], logDir)))]),
  );
  const workers = new Map(Object.keys(config.datacenters).map((dc) => [dc, ['a', 'b'].map((g) => new Proc(`worker-${dc}-${g}`, ['-c', configFile, 'worker', dc], logDir))]));
  const all = [...[...tailers.values()].flat(), ...[...workers.values()].flat()];
  for (const p of [...workers.values()].flat()) p.start();
  for (const t of [...tailers.values()].flat()) t.start();
  // A process that exits by itself is a failure of the pipeline (they replace a failed component
  // themselves); it is restarted so that the run goes on, and reported.
  const crashes: string[] = [];
  let stopping = false;
  for (const p of all) {
    p.onUnexpectedExit = (code, signal) => {
      crashes.push(`${clock().trim()} ${p.name} exited by itself (${signal ?? `exit code ${code}`}); see ${path.relative(repoRoot, p.logFile)}`);
      say(`${p.name} exited by itself (${signal ?? `exit code ${code}`})${stopping ? '' : '; restarting it'}`);
      if (!stopping) p.start();
    };
  }
  say(`pipeline: ${all.map((p) => `${p.name} (pid ${p.pid})`).join(', ')}; logs in ${path.relative(repoRoot, logDir)}`);

  const mysqlOpts = (role: 'writer' | 'admin' | 'installer'): mysql.ConnectionOptions => {
    const c = role === 'installer' ? config.mysql : mysqlFor(config.mysql, role);
    return { host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database };
  };
  const tag = `chaos-${runId}`;
  const servers = Object.values(config.datacenters).flatMap((d) => serversOf(d));
  const workload = new Workload(mysqlOpts('writer'), mysqlOpts('admin'), opts, tag, random);
  // Which servers each key belongs on (all of them, but in a ketama data center).
  const holds = holdsOf(config.datacenters);
  const bulk = new BulkLoads(mysqlOpts('installer'), mysqlOpts('admin'), servers, holds, opts, workload, random);
  const faults = new Faults(layout, tailers, workers, config, random, west);
  const kindsToInject: FaultKind[] = [...FAULT_KINDS, ...(west ? SITE_FAULT_KINDS : [])];
  onInterrupt = async () => {
    faults.halted = true;
    stopping = true;
    faults.resumeAll();
    void bulk.stop(); // a bulk transaction under way dies with MariaDB
    await Promise.all([workload.stop(), bulk.stopWatching()]).catch(() => undefined);
    await Promise.all(all.map((p) => p.kill('SIGKILL')));
    await stopStack();
  };

  let exitCode = 1;
  try {
    // Not one write before the tailer has saved where it starts: without a checkpoint it starts
    // at the end of the binlog, and what was written before would never be tailed.
    const ready = await waitForPipeline(config, 60_000);
    say(ready.ok ? `pipeline ready after ${ready.s.toFixed(1)} s (checkpoint saved${west ? ' in every site' : ''}, a worker group active in every data center)` : `pipeline NOT ready after 60 s (${ready.missing}); starting anyway`);
    workload.start();
    if (opts.bulk) bulk.start(durationMs);
    say(
      `workload: ${opts.connections} connections, ~${opts.rate} statements/s over ${opts.keys} keys in ${opts.namespaces} namespaces, namespace flushes every 4-12 s` +
        (opts.bulk ? `; bulk transactions of ${opts.bulkRows.min}-${opts.bulkRows.max} rows every ~${opts.bulkEvery} s from 15-30% of the run` : ''),
    );
    const end = Date.now() + durationMs;

    // One data center's outage, at a random time in the first half, beside the other faults.
    const outageAt = Date.now() + durationMs * (0.1 + 0.4 * random()) * ((durationMs - dcOutageMs) / durationMs);
    const outage = (async () => {
      await sleep(Math.max(0, outageAt - Date.now()));
      await faults.inject('dc-outage', dcOutageMs);
    })();

    // The others one after another: every kind once (shuffled), then at random. Every kind is
    // injected even if that takes past the end (a slow restart); to make that rare, the gaps
    // of the first round shrink to what the kinds still to come leave.
    const order = [...kindsToInject].sort(() => random() - 0.5);
    const gapMs = Math.max(2_000, Math.min(10_000, (durationMs - 10_000) / (kindsToInject.length * 2.5)));
    const leaseTtlMs = Math.max(config.tailer.leaseTtlMs, config.worker.leaseTtlMs);
    while (order.length > 0 || Date.now() < end - 8_000) {
      let gap = gapMs * (0.5 + random());
      if (order.length > 0) {
        const spare = end - 8_000 - Date.now() - order.reduce((ms, k) => ms + faultMs(k, leaseTtlMs), 0);
        gap = Math.min(gap, Math.max(500, spare / order.length));
      }
      await sleep(gap);
      if (order.length === 0 && Date.now() >= end - 8_000) break;
      const kind = order.shift() ?? kindsToInject[Math.floor(random() * kindsToInject.length)]!;
      await faults.inject(kind, dcOutageMs);
    }
    await outage;
    const left = end - Date.now();
    if (left > 0) await sleep(left);
    await Promise.all([workload.stop(), bulk.stop()]);
    const w = workload.stats;
    say(`workload stopped: ${w.statements} statements (${w.sets} sets, ${w.ttlSets} with a TTL, ${w.inserts} direct INSERTs, ${w.deletes} deletes, ${w.transactions} transactions of which ${w.rollbacks} rolled back), ${w.flushes} namespace flushes, ${w.errors} client errors (during faults)`);

    say('letting the pipeline drain');
    // A last write: once it is on every server and nothing is queued, kept or unhealthy, the
    // pipeline has applied everything MySQL committed before it.
    const sentinel = `${tag}:sentinel`;
    for (;;) {
      try {
        const c = await mysql.createConnection(mysqlOpts('writer'));
        await c.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'end']);
        await c.end();
        break;
      } catch (err) {
        say(`sentinel write failed (${err instanceof Error ? err.message : String(err)}); retrying`);
        await sleep(1_000);
      }
    }
    const lacking = await waitForKeyEverywhere(servers.filter((s) => holds(s, sentinel)), sentinel, 'end', 150_000);
    let drain: { drained: boolean; last: string };
    if (lacking.length === 0) drain = await waitForDrain(configFile, 150_000);
    else {
      // What the pipeline says about itself (a few seconds of status), to tell where it stuck.
      const st = await waitForDrain(configFile, 3_000);
      drain = { drained: false, last: `the last write did not reach ${lacking.join(', ')} within 150 s; status: ${st.last}` };
    }
    say(drain.drained ? `drained: ${drain.last}` : `NOT drained: ${drain.last}`);
    await bulk.stopWatching();

    const keys = [...Array.from({ length: opts.keys }, (_, i) => workload.key(i).key), ...bulk.keys()];
    say(`checking ${keys.length} keys written (and every key of the registry) on ${servers.length} servers`);
    const checkStarted = Date.now();
    const result = await check(mysqlOpts('admin'), servers, keys, { holds });
    const checkS = (Date.now() - checkStarted) / 1000;

    process.stdout.write('\nfaults injected:\n');
    for (const f of faults.injected) process.stdout.write(`  ${f.at.padStart(7)}  ${f.kind.padEnd(15)} ${f.target.padEnd(24)} ${f.detail}\n`);
    const kinds = new Set(faults.injected.map((f) => f.kind));
    const missing = [...kindsToInject, 'dc-outage'].filter((k) => !kinds.has(k));
    process.stdout.write(`  ${faults.injected.length} faults, ${kinds.size} kinds${missing.length ? ` (not injected, the run was too short: ${missing.join(', ')})` : ''}\n`);
    const problems = [...faults.problems, ...crashes];
    for (const p of problems) process.stdout.write(`  PROBLEM ${p}\n`);

    process.stdout.write('\nbulk transactions:\n');
    for (const b of bulk.records) process.stdout.write(`  ${b.at.padStart(7)}  #${b.n} ${describeBulk(b)}\n`);
    const committed = bulk.records.filter((b) => b.committed);
    process.stdout.write(
      `  ${committed.length} committed (${committed.reduce((n, b) => n + b.rows, 0)} rows, the largest ${Math.max(0, ...committed.map((b) => b.rows))}), ${bulk.records.length - committed.length} failed, ${committed.filter((b) => b.flush?.sqlS !== undefined).length} namespace flushed after a bulk load${opts.bulk ? '' : ' (--no-bulk)'}\n`,
    );

    const evictions = await memcachedEvictions(servers);
    process.stdout.write(
      `\nchecked ${result.keysChecked} keys on ${servers.length} servers: ${result.comparisons} comparisons, ${result.present} values present, ${result.skippedAtExpiry} skipped within 2 s of their expiry (in ${checkS.toFixed(1)} s)\n`,
    );
    if (evictions.length) process.stdout.write(`  memcached evicted items (a missing key may be this, not the pipeline): ${evictions.join(', ')}\n`);
    let shown = 0;
    for (const [, ds] of result.divergent) {
      for (const d of ds) if (shown++ < 20) process.stdout.write(`  DIVERGENT ${d.server} ${d.key}: expected ${d.expected}, found ${d.found}\n`);
    }
    if (result.divergent.size > 0) {
      // Where they are: one server that never recovered, or keys spread over several.
      const perServer = new Map<string, number>();
      for (const ds of result.divergent.values()) for (const d of ds) perServer.set(d.server, (perServer.get(d.server) ?? 0) + 1);
      process.stdout.write(`  divergent values per server: ${[...perServer].map(([srv, n]) => `${srv} ${n}`).join(', ')}\n`);
    }

    // The checker checks: a stale value planted on one server must be found.
    const live = keys.find((k) => result.liveKeys.has(k));
    let selfTest = 'skipped (no live key)';
    if (live) {
      // On a server the key belongs on (the last such).
      const target = servers.filter((s) => holds(s, live)).pop()!;
      const planted = new MemcachedTextClient(target);
      await planted.set(live, 'planted-stale-value');
      planted.close();
      const again = await check(mysqlOpts('admin'), servers, [live], { listedOnly: true, holds });
      const found = again.divergent.get(live)?.some((d) => d.server === target && d.found.startsWith('a different value'));
      selfTest = found ? 'a stale value planted on one server was found' : 'FAILED: a stale value planted on one server was not found';
      const fix = new MemcachedTextClient(target);
      await fix.delete(live);
      fix.close();
      // And a value of the key on a server it does not belong on (ketama).
      const stranger = servers.find((s) => !holds(s, live));
      if (stranger && !selfTest.startsWith('FAILED')) {
        const c = new MemcachedTextClient(stranger);
        await c.set(live, 'planted-misplaced-value');
        const misplaced = await check(mysqlOpts('admin'), servers, [live], { listedOnly: true, holds });
        await c.delete(live);
        c.close();
        const seen = misplaced.divergent.get(live)?.some((d) => d.server === stranger && d.expected.startsWith('nothing (the key is not placed'));
        selfTest += seen ? '; a key planted on a server it does not belong on was found' : '; FAILED: a key planted on a server it does not belong on was not found';
      }
    }
    process.stdout.write(`checker self-test: ${selfTest}\n`);
    process.stdout.write(`divergent keys: ${result.divergent.size}\n`);
    // A crashed process was restarted as a supervisor would, so the data may still converge; but
    // a process that exits by itself, or a stale lease holder that does not stand by, is a bug.
    process.stdout.write(`pipeline problems: ${problems.length}${problems.length ? ' (see PROBLEM above)' : ''}\n`);
    exitCode = result.divergent.size === 0 && drain.drained && !selfTest.includes('FAILED') && problems.length === 0 ? 0 : 1;
  } finally {
    stopping = true;
    faults.resumeAll();
    await Promise.all([workload.stop(), bulk.stop(), bulk.stopWatching()]).catch(() => undefined);
    await Promise.all(all.map((p) => p.kill('SIGTERM')));
    await Promise.all(all.map((p) => p.kill('SIGKILL')));
    if (!opts.keepStack) await west?.stop();
    if (!opts.keepStack && started.length > 0) {
      await down(layout);
      // Its data is kept only to look into a failed run; the pipeline's logs also when one of
      // its processes failed.
      const logsOnly = exitCode === 0 && faults.problems.length + crashes.length > 0;
      if (exitCode === 0) {
        for (const entry of fs.readdirSync(layout.dir)) if (!(logsOnly && entry === 'logs')) fs.rmSync(path.join(layout.dir, entry), { recursive: true, force: true });
        if (!logsOnly) fs.rmSync(layout.dir, { recursive: true, force: true });
      }
      const rel = path.relative(repoRoot, layout.dir);
      say(`private stack stopped${exitCode !== 0 ? `; its data and the pipeline's logs are kept in ${rel}` : logsOnly ? ` and removed; the pipeline's logs are kept in ${path.relative(repoRoot, logDir)}` : ' and removed'}`);
    }
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[chaos] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
