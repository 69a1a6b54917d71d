/**
 * NAIVE BASELINE for the benchmark: the obvious binlog → BullMQ → memcached design that mcrepl
 * improves on. Kept as a reference to measure against; it is not part of the product, and it
 * does none of the things that make mcrepl correct under failure.
 *
 * Design: one BullMQ job per binlog row per data center.
 *
 * - Producer (in the calling process): zongji reads the binlog from a given position, filtered
 *   to `mc_storage` of one database. Each written row is decoded with mcrepl's own `decodeRow`
 *   and, for each data center in turn, `await queue.add('op', …)` on queue `naive-<dc>`: one
 *   Redis round trip per row per data center, strictly one after the other.
 * - Workers: one child process per data center (this file run as `naive.js worker <json>`), a
 *   BullMQ Worker on `naive-<dc>` at concurrency 1 that, per job, sets (or deletes) the key on
 *   every memcached server of the data center with memjs, one request per server.
 *
 * Why it is naive (what mcrepl does instead):
 * - Per-row jobs: every row costs a Queue.add on the producer and a fetch/complete round trip
 *   on each worker, plus one memcached request per server; nothing is batched, pipelined or
 *   coalesced (mcrepl: one job carries thousands of ops, added with addBulk, applied
 *   pipelined and coalesced per key).
 * - One queue per data center, one consumer: no partitioning, so no parallelism in a DC.
 * - Rows are enqueued as they are read, not at their transaction's commit: a rolled-back
 *   transaction's rows are applied anyway, and the expiry is computed from the row event's time.
 * - No checkpoint, no transaction numbering, no watermark: a restart either loses or repeats
 *   ops, and a worker cannot recognise a replayed job. No leases, no reconnect, no retries of
 *   a refused memcached write (the job fails and the run reports it), no dead-letter list (a
 *   bad row becomes a delete of its key when it has a usable one, else a no-op job), namespace
 *   flush markers are not recorded (their deletes are applied like any other row).
 *
 * Every row read produces exactly one job per data center (`op: 'skip'` when there is nothing
 * to apply), so the workers' job counts are the row counts.
 *
 * Timing: the clock starts once every worker process is connected and ready, just before
 * zongji is started; it stops when the last data center reports that its worker applied the
 * `rows`-th job on every server (workers report over IPC every 1000 jobs and at the end).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ZongJi, { type AnyBinlogEvent, type RowsEvent, type WriteRowsEvent } from '@vlasky/zongji';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import memjs from 'memjs';
import type { Position } from '../src/source/checkpoint-store.js';
import { decodeRow } from '../src/source/row-decoder.js';
import { stopZongji as stopListenerZongji } from '../src/source/binlog-listener.js';

export interface NaiveRedisOptions {
  host: string;
  port: number;
  password?: string | undefined;
  username?: string | undefined;
  db?: number | undefined;
  /** BullMQ prefix of the naive queues. */
  prefix: string;
}

export interface NaiveMysqlOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** Replication server id of the binlog connection; must differ from every other reader's. */
  serverId: number;
}

export interface NaiveOptions {
  redis: NaiveRedisOptions;
  mysql: NaiveMysqlOptions;
  /** Data center name → memcached servers (host:port). */
  datacenters: Record<string, string[]>;
  /** Where to start reading the binlog (exclusive: what is after it). */
  from: Position;
  /** Rows of mc_storage to read and apply; the run ends when every DC applied this many. */
  rows: number;
  /** The number of rows applied on every server of every data center so far. */
  onProgress?: (applied: number) => void;
  /** Give up (reject) after this long; default: wait forever. */
  timeoutMs?: number;
}

export interface NaiveResult {
  rows: number;
  /** From start to the last DC applying the `rows`-th row. */
  seconds: number;
  rowsPerSec: number;
  /** From start until the last Queue.add resolved. */
  enqueueSeconds: number;
}

/** One row, as job data: key and value base64, absolute expiry (unix s, 0 = never). */
interface NaiveJob {
  k: string;
  v: string;
  e: number;
  op: 'set' | 'delete' | 'skip';
}

interface WorkerArgs {
  dc: string;
  servers: string[];
  prefix: string;
  rows: number;
}

type WorkerMessage = { type: 'ready' } | { type: 'progress'; applied: number } | { type: 'error'; error: string };

const STORAGE_TABLE = 'mc_storage';
/** The same events as src/source/binlog-listener.ts asks for. */
const EVENTS = ['tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'query', 'gtid', 'mariadbgtid', 'rotate', 'format', 'xaprepare', 'heartbeat'];
/** memcached's default item size (memcached.maxItemBytes default). */
const MAX_ITEM_BYTES = 1_048_576;
/** Rows read but not yet enqueued: above HIGH the binlog socket is paused, below LOW resumed. */
const PENDING_HIGH = 1000;
const PENDING_LOW = 250;
const PROGRESS_EVERY = 1000;

const queueName = (dc: string) => `naive-${dc}`;
const THIS_FILE = fileURLToPath(import.meta.url);

function redisOptions(r: NaiveRedisOptions): RedisOptions {
  return {
    host: r.host,
    port: r.port,
    ...(r.password ? { password: r.password } : {}),
    ...(r.username ? { username: r.username } : {}),
    ...(r.db !== undefined ? { db: r.db } : {}),
    maxRetriesPerRequest: null,
  };
}

const msg = (err: unknown) => (err instanceof Error ? err.message : String(err));

export async function runNaive(opts: NaiveOptions): Promise<NaiveResult> {
  const dcs = Object.keys(opts.datacenters);
  if (dcs.length === 0) throw new Error('runNaive: no data centers');
  if (!(opts.rows > 0)) throw new Error('runNaive: rows must be > 0');

  const redis = new Redis(redisOptions(opts.redis));
  const queues = new Map(dcs.map((dc) => [dc, new Queue<NaiveJob>(queueName(dc), { connection: redis, prefix: opts.redis.prefix })]));
  const children = new Map<string, ChildProcess>();
  let zongji: ZongJi | undefined;
  let timeout: NodeJS.Timeout | undefined;

  // Everything that can fail while running rejects this one promise.
  let fail!: (err: Error) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  let finished = false;
  let wakeEnqueue: (() => void) | undefined;

  try {
    // Leftovers of an earlier run would be counted as applied rows.
    for (const q of queues.values()) await q.obliterate({ force: true });

    // --- workers
    const applied = new Map(dcs.map((dc) => [dc, 0]));
    const readyAll: Promise<void>[] = [];
    let allDone!: () => void;
    const done = new Promise<void>((resolve) => (allDone = resolve));
    let finishedAt = 0;
    const reportProgress = () => {
      const min = Math.min(...applied.values());
      opts.onProgress?.(min);
      if (min >= opts.rows && finishedAt === 0) {
        finishedAt = performance.now();
        allDone();
      }
    };
    for (const dc of dcs) {
      const args: WorkerArgs = { dc, servers: opts.datacenters[dc]!, prefix: opts.redis.prefix, rows: opts.rows };
      // The Redis options (password included) go through the environment, not the command line.
      const child = spawn(process.execPath, [THIS_FILE, 'worker', JSON.stringify(args)], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        env: { ...process.env, NAIVE_REDIS: JSON.stringify(opts.redis) },
      });
      children.set(dc, child);
      readyAll.push(
        new Promise<void>((resolve) => {
          child.on('message', (m: WorkerMessage) => {
            if (m.type === 'ready') resolve();
            else if (m.type === 'progress') {
              applied.set(dc, m.applied);
              reportProgress();
            } else if (m.type === 'error') fail(new Error(`naive worker ${dc}: ${m.error}`));
          });
        }),
      );
      child.on('exit', (code, signal) => {
        if (!finished) fail(new Error(`naive worker ${dc} exited (${signal ?? `code ${code}`}) before the run finished`));
      });
      child.on('error', (err) => fail(new Error(`naive worker ${dc}: ${err.message}`)));
    }
    if (opts.timeoutMs !== undefined) {
      timeout = setTimeout(() => fail(new Error(`runNaive: not done after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    }
    await Promise.race([Promise.all(readyAll), failed]);

    // --- producer
    const started = performance.now();
    const pending: NaiveJob[] = [];
    let read = 0; // rows taken from the binlog
    let enqueued = 0;
    let enqueueEnd = 0;
    let paused = false;
    let wake: (() => void) | undefined;
    wakeEnqueue = () => wake?.();

    const z = new ZongJi({
      host: opts.mysql.host,
      port: opts.mysql.port,
      user: opts.mysql.user,
      password: opts.mysql.password,
      charset: 'utf8mb4',
    });
    zongji = z;
    z.on('error', (err: Error) => fail(new Error(`zongji: ${err.message}`)));
    z.on('binlog', (event: AnyBinlogEvent) => {
      if (event.getEventName() !== 'writerows' || read >= opts.rows) return;
      const e = event as WriteRowsEvent & RowsEvent;
      const table = e.tableMap[e.tableId];
      if (!table || table.tableName !== STORAGE_TABLE || table.parentSchema !== opts.mysql.database) return;
      const eventTimeSec = Math.floor(event.timestamp / 1000);
      for (const values of e.rows as Record<string, unknown>[]) {
        if (read >= opts.rows) break;
        read++;
        const d = decodeRow(values, read, eventTimeSec, { maxItemBytes: MAX_ITEM_BYTES });
        const op = d.ok ? d.op : d.instead;
        let job: NaiveJob;
        if (op?.kind === 'set') job = { k: op.key.toString('base64'), v: op.value.toString('base64'), e: op.expiresAt, op: 'set' };
        else if (op?.kind === 'delete') job = { k: op.key.toString('base64'), v: '', e: 0, op: 'delete' };
        else job = { k: '', v: '', e: 0, op: 'skip' }; // flush marker, or a bad row without a usable key
        pending.push(job);
      }
      if (read >= opts.rows) {
        // Enough: stop reading (the enqueue loop finishes what is pending).
        void stopZongji(z);
      } else if (!paused && pending.length > PENDING_HIGH) {
        paused = true;
        z.connection?.pause();
      }
      wake?.();
    });

    const startOpts: Record<string, unknown> = {
      serverId: opts.mysql.serverId,
      includeEvents: EVENTS,
      includeSchema: { [opts.mysql.database]: [STORAGE_TABLE] },
    };
    if (opts.from.gtidSet) startOpts.gtidSet = opts.from.gtidSet;
    else if (opts.from.file) {
      startOpts.filename = opts.from.file;
      startOpts.position = opts.from.pos;
    } else throw new Error('runNaive: `from` needs a gtidSet or a file and pos');
    z.start(startOpts);

    const enqueueLoop = async () => {
      while (enqueued < opts.rows && !finished) {
        const job = pending.shift();
        if (!job) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        // The naive part: one add per row per data center, each awaited before the next.
        for (const q of queues.values()) await q.add('op', job, { removeOnComplete: true });
        enqueued++;
        if (paused && pending.length < PENDING_LOW) {
          paused = false;
          z.connection?.resume();
        }
      }
      enqueueEnd = performance.now();
    };
    const enqueuing = enqueueLoop().catch((err) => fail(new Error(`enqueue: ${msg(err)}`)));
    await Promise.race([Promise.all([enqueuing, done]), failed]);

    const seconds = (finishedAt - started) / 1000;
    return {
      rows: opts.rows,
      seconds,
      rowsPerSec: opts.rows / seconds,
      enqueueSeconds: (enqueueEnd - started) / 1000,
    };
  } finally {
    finished = true;
    wakeEnqueue?.();
    clearTimeout(timeout);
    if (zongji) await stopZongji(zongji);
    await Promise.all([...children.values()].map((c) => stopChild(c)));
    for (const q of queues.values()) {
      await q.obliterate({ force: true }).catch(() => {});
      await q.close().catch(() => {});
    }
    redis.disconnect();
  }
}

const zongjiStops = new WeakMap<ZongJi, Promise<void>>();

/** Stops zongji once (later calls wait for the same stop); gives up waiting after 3 s. */
function stopZongji(z: ZongJi): Promise<void> {
  let p = zongjiStops.get(z);
  if (!p) {
    p = stopListenerZongji(z);
    zongjiStops.set(z, p);
  }
  return p;
}


/** Asks the worker to close, then kills it if it has not exited within 3 s. */
async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
  try {
    c.send({ type: 'stop' });
  } catch {
    /* channel already closed */
  }
  const t = setTimeout(() => c.kill('SIGKILL'), 3_000);
  await exited;
  clearTimeout(t);
}

// ---------------------------------------------------------------------------------------------
// Child: one data center's worker

async function workerMain(args: WorkerArgs): Promise<void> {
  const send = (m: WorkerMessage) => process.send?.(m);
  const redisOpts = JSON.parse(process.env.NAIVE_REDIS ?? '{}') as NaiveRedisOptions;
  const connection = new Redis(redisOptions(redisOpts));
  const clients = args.servers.map((address) => memjs.Client.create(address, { logger: { log() {} } }));
  let applied = 0;

  const worker = new Worker<NaiveJob>(
    queueName(args.dc),
    async (job: Job<NaiveJob>) => {
      const { k, v, e, op } = job.data;
      if (op !== 'skip') {
        // memjs takes a string key but writes a Buffer as is (binary-safe keys).
        const key = Buffer.from(k, 'base64') as unknown as string;
        if (op === 'set') {
          const value = Buffer.from(v, 'base64');
          await Promise.all(clients.map((c) => c.set(key, value, { expires: e })));
        } else {
          await Promise.all(clients.map((c) => c.delete(key)));
        }
      }
      applied++;
      if (applied % PROGRESS_EVERY === 0 || applied === args.rows) send({ type: 'progress', applied });
    },
    { connection, prefix: args.prefix, concurrency: 1 },
  );
  worker.on('failed', (job, err) => send({ type: 'error', error: `job ${job?.id}: ${err.message}` }));
  worker.on('error', (err) => send({ type: 'error', error: err.message }));

  const shutdown = async () => {
    await worker.close(true).catch(() => {});
    for (const c of clients) c.close();
    connection.disconnect();
    process.exit(0);
  };
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'stop') void shutdown();
  });
  process.on('disconnect', () => void shutdown()); // the parent died

  await worker.waitUntilReady();
  send({ type: 'ready' });
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === 'worker') {
  workerMain(JSON.parse(process.argv[3] ?? '{}') as WorkerArgs).catch((err) => {
    process.send?.({ type: 'error', error: msg(err) } satisfies WorkerMessage);
    process.exit(1);
  });
}
