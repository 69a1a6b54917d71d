/**
 * The tailer: binlog → ops → jobs per (data center, partition) → checkpoint.
 *
 * Order of effects for every batch, which is what makes a crash at any point safe:
 *   1. all jobs of the batch are added to Redis (one MULTI),
 *   2. its dead letters are recorded,
 *   3. only then the checkpoint moves to the position after the batch's last transaction.
 * A crash before (3) replays the batch after restart; workers skip ops they already applied
 * (each op carries its own sequence number `t`, consecutive over the stream; the checkpoint
 * saves the last one).
 *
 * A transaction too large to hold (more than `tailer.batchMaxOps` rows) streams through: each
 * chunk of its rows is stored in Redis as it arrives (FanoutProducer.stage), invisible to the
 * workers; at its end, if it committed, its jobs are added in order and then the checkpoint
 * moves; if it rolled back, its payloads are removed. Memory stays bounded by the chunks in
 * flight (`tailer.maxPendingBytes`, the same backpressure as for many small transactions).
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { MysqlConfig, ResolvedConfig } from '../config/schema.js';
import { RedisRestartDetector, connectRedis, redisReady } from '../coordination/redis.js';
import { Lease, sleep } from '../coordination/lease.js';
import { Lifecycle, type LifecycleState } from '../coordination/lifecycle.js';
import { withTimeout } from '../coordination/timeout.js';
import { errorMessage, LeaseLostError, McreplError } from '../errors.js';
import { Batch, type StagedTxn } from '../fanout/batch.js';
import { DeadLetterStore, type DeadLetter } from '../fanout/dead-letters.js';
import { Pacer } from '../fanout/pacer.js';
import { FanoutProducer, sweepPayloads } from '../fanout/producer.js';
import { RedisKeys } from '../fanout/redis-keys.js';
import { recordTopology } from '../fanout/topology.js';
import type { Logger } from '../observability/logger.js';
import { BinlogListener, type BinlogRow, type BinlogRowChunk, type BinlogTransaction } from './binlog-listener.js';
import { RedisCheckpointStore, describePosition, type Checkpoint, type CheckpointStore, type Position } from './checkpoint-store.js';
import { assertPreflight, preflight } from './preflight.js';
import { SourceChooser } from './source-chooser.js';
import { currentBinlogPosition } from './position.js';
import { transactionsBehind } from './source-lag.js';
import { addCollector, checkpointAge, leaseHeld, sourceBehind, sourceLag } from '../observability/metrics.js';
import { connectMysql } from '../registry/mysql.js';
import { mysqlFor } from '../registry/accounts.js';
import type { Connection } from 'mysql2/promise';
import { decodeRow, describeRow } from './row-decoder.js';

export const STORAGE_TABLE = 'mc_storage';

/** Internal: a Redis restart was noticed; the flush loop rewinds instead of writing. */
class RewindNeeded extends Error {}

const PERSIST_ATTEMPT_TIMEOUT_MS = 5_000;
/** A large transaction's jobs are added (or its payloads removed) this many per Redis write. */
const STAGED_JOBS_PER_WRITE = 256;

export type TailerState = LifecycleState;

export interface TailerStats {
  transactions: number;
  /** Times the binlog stream was paused because too much waited to be enqueued. */
  pauses: number;
  ops: number;
  jobs: number;
  deadLetters: number;
  batches: number;
  /** Chunks of large transactions stored in Redis while they streamed in. */
  stagedChunks: number;
  lastCheckpoint?: Checkpoint;
}

export interface TailerEvents {
  state: [TailerState];
  /** A batch was enqueued and the checkpoint moved. */
  checkpoint: [Checkpoint];
  fatal: [Error];
}

export interface TailerOptions {
  logger: Logger;
  /** Ignore the saved checkpoint and start a new epoch at the current end of the binlog. */
  resetCheckpoint?: boolean;
  checkpointStore?: CheckpointStore;
  /** The binlog is a replica's (a site's `source`): preflight checks what a replica must do too. */
  replicaSource?: boolean;
  /**
   * The site reads a server other than the primary: the primary, read instead while that
   * server is `behindTransactions` or more behind it (0: never; src/source/source-chooser.ts).
   */
  fallback?: { primary: MysqlConfig; behindTransactions: number };
  /** The site it serves (metrics). */
  site?: string;
}

/** A connection (no database) within `ms`; one that completes after that is closed, not left open. */
async function connectWithin(account: MysqlConfig, ms: number, what: string): Promise<Awaited<ReturnType<typeof connectMysql>>> {
  const connecting = connectMysql(account, { database: false });
  try {
    return await withTimeout(connecting, ms, what);
  } catch (err) {
    void connecting.then((c) => c.destroy(), () => undefined);
    throw err;
  }
}

export class Tailer extends EventEmitter<TailerEvents> {
  private readonly logger: Logger;
  private readonly redis: Redis;
  private readonly keys: RedisKeys;
  private readonly lease: Lease;
  private readonly store: CheckpointStore;
  private readonly producer: FanoutProducer;
  private readonly deadLetters: DeadLetterStore;
  private readonly listener: BinlogListener;
  /** A site reading a replica: switches to the primary while the replica is far behind. */
  private readonly chooser: SourceChooser | undefined;
  private readonly datacenters: string[];
  private readonly abort = new AbortController();
  private readonly life: Lifecycle;
  private readonly restarts: RedisRestartDetector;
  /** Redis restarted: what it holds may be older than what we sent it; replay from its checkpoint. */
  private rewindRequested = false;

  private epoch = '';
  private txnSeq = 0;
  private batch: Batch;
  /** Batches taken out of turn, to be enqueued before `batch` (a large transaction's end, and what came before it). */
  private readonly sealed: Batch[] = [];
  /** A large transaction streaming in: its chunks are being staged in Redis. */
  private open: StagedTxn | undefined;
  private inFlightBytes = 0;
  /** Per data center: ops held while its queue has a job waiting (adaptive job size). */
  private readonly pacer: Pacer;
  /** Batches taken so far (numbers them for the pacer). */
  private batchNo = 0;
  /** Ends of batches enqueued, oldest first, whose checkpoint waits for held ops of theirs to go out. */
  private unsaved: { batchNo: number; position: Position; txnSeq: number; sourceTimeSec: number | undefined }[] = [];
  private flushing: Promise<void> | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private lastSaveAt = 0;
  /** When the last batch of ops was taken to be enqueued (performance.now()). */
  private lastFlushAt = -Infinity;
  readonly stats: TailerStats = { transactions: 0, pauses: 0, ops: 0, jobs: 0, deadLetters: 0, batches: 0, stagedChunks: 0 };
  private fatalError: Error | undefined;
  private readonly stopCollecting: () => void;
  /** The head of the binlog the tailer reads, looked up at most every few seconds (metrics). */
  private head: { at: number; position: Promise<Position | null> } | undefined;

  constructor(
    private readonly config: ResolvedConfig,
    private readonly opts: TailerOptions,
  ) {
    super();
    this.logger = opts.logger;
    this.life = new Lifecycle('tailer', this.logger, (s) => this.emit('state', s));
    this.keys = new RedisKeys(config.redis.prefix);
    this.redis = connectRedis(config.redis, 'tailer', { strictOrder: true });
    this.redis.on('error', (err) => this.logger.warn({ err: errorMessage(err) }, 'redis connection error'));
    this.restarts = new RedisRestartDetector(this.redis, this.logger);
    this.restarts.on('restarted', () => (this.rewindRequested = true));
    this.lease = new Lease(this.redis, this.keys.tailerLease, config.tailer.leaseTtlMs, this.logger);
    this.store = opts.checkpointStore ?? new RedisCheckpointStore(this.redis, this.keys, this.lease);
    this.datacenters = Object.keys(config.datacenters);
    this.producer = new FanoutProducer(this.redis, this.keys, this.datacenters);
    this.pacer = new Pacer(this.datacenters, { maxOps: config.tailer.batchMaxOps, maxBytes: config.tailer.batchMaxBytes, maxHoldMs: config.tailer.holdMaxMs });
    this.deadLetters = new DeadLetterStore(this.redis, this.keys, config.deadLetters.maxEntries);
    this.batch = new Batch(config.partitions, 0);
    const site = opts.site ?? config.site ?? 'default';
    this.stopCollecting = addCollector(async () => {
      leaseHeld.set({ role: 'tailer', name: site }, this.lease.isHeld ? 1 : 0);
      const cp = this.stats.lastCheckpoint;
      if (!this.lease.isHeld || !cp) return;
      checkpointAge.set({ site }, Math.max(0, Date.now() - cp.savedAt) / 1000);
      const head = await this.headPosition();
      const behind = head ? transactionsBehind(head, cp.position) : null;
      if (behind === null) return;
      sourceBehind.set({ site }, behind);
      sourceLag.set({ site }, behind === 0 || cp.sourceTimeSec === undefined ? 0 : Math.max(0, Date.now() / 1000 - cp.sourceTimeSec));
    });
    this.listener = new BinlogListener({
      mysql: mysqlFor(config.mysql, 'tailer'),
      table: STORAGE_TABLE,
      reconnectInitialMs: config.tailer.reconnectInitialMs,
      reconnectMaxMs: config.tailer.reconnectMaxMs,
      heartbeatMs: config.tailer.heartbeatMs,
      stallTimeoutMs: config.tailer.stallTimeoutMs,
      chunkRows: config.tailer.batchMaxOps,
      logger: this.logger,
    });
    this.listener.on('rows', (chunk) => this.onRows(chunk));
    this.listener.on('transaction', (txn) => this.onTransaction(txn));
    this.listener.on('ready', () => this.abandonOpen());
    this.listener.on('fatal', (err) => this.fail(err));
    this.lease.on('lost', (err) => this.fail(err));
    const fb = opts.fallback;
    if (fb && fb.behindTransactions > 0) {
      this.chooser = new SourceChooser({
        replica: mysqlFor(config.mysql, 'tailer'),
        primary: mysqlFor(fb.primary, 'tailer'),
        behindTransactions: fb.behindTransactions,
        checkMs: config.tailer.sourceCheckMs,
        logger: this.logger,
        read: () => this.listener.position,
      });
      this.chooser.on('switch', (_role, source) => this.listener.switchSource(source));
    }
  }

  /** `host:port` of the server whose binlog is read now. */
  get source(): string {
    return this.listener.server;
  }

  get state(): TailerState {
    return this.life.state;
  }

  /** Waits for the lease (a standby waits here), checks the server, and starts tailing. */
  async start(): Promise<void> {
    await redisReady(this.redis, this.abort.signal);
    if (this.opts.resetCheckpoint) {
      // A standby would apply the reset whenever it takes over, skipping everything since the
      // checkpoint: refuse it up front while another tailer is active.
      const holder = await Lease.holder(this.redis, this.keys.tailerLease);
      if (holder) {
        throw new McreplError('LEASE_HELD', `another tailer is active (${holder}); stop it before starting one with --reset-checkpoint`);
      }
    }
    await this.life.acquire(this.lease, this.abort.signal);
    try {
      const conn = await this.connectWithRetry();
      let saved: Checkpoint | null;
      try {
        const primaryServerId = this.opts.fallback ? await this.serverIdOf(this.opts.fallback.primary) : undefined;
        const result = await preflight(conn, { database: this.config.mysql.database, serverId: this.config.mysql.serverId, table: STORAGE_TABLE, replica: this.opts.replicaSource === true, ...(primaryServerId !== undefined ? { primaryServerId } : {}) });
        for (const w of result.warnings) this.logger.warn(w);
        assertPreflight(result);
        await recordTopology(this.redis, this.keys, { partitions: this.config.partitions, datacenters: this.datacenters }, this.logger);
        saved = this.opts.resetCheckpoint ? null : await this.store.load();
        if (!saved) {
          // A new stream: it starts where the binlog ends now, and that point is saved before
          // anything is read, so a restart can never skip what comes after it.
          saved = { position: await currentBinlogPosition(conn), txnSeq: 0, epoch: randomUUID(), savedAt: Date.now() };
          await this.store.save(saved);
          this.logger.info({ from: describePosition(saved.position), epoch: saved.epoch, reset: this.opts.resetCheckpoint ?? false }, 'no checkpoint: starting at the current end of the binlog');
        } else {
          this.logger.info({ from: describePosition(saved.position), txnSeq: saved.txnSeq, epoch: saved.epoch }, 'resuming from checkpoint');
        }
      } finally {
        await conn.end();
      }
      this.epoch = saved.epoch;
      this.txnSeq = saved.txnSeq;
      const swept = await sweepPayloads(this.redis, this.keys, this.epoch);
      if (swept > 0) this.logger.info({ payloads: swept }, 'removed payloads a previous tailer left without jobs');
      this.stats.lastCheckpoint = saved;
      const from = saved.position;
      this.batch = new Batch(this.config.partitions, this.txnSeq);
      // Resolve once the stream is really open, so "running" means writes from now on are seen.
      const ready = new Promise<void>((resolve, reject) => {
        this.listener.once('ready', () => resolve());
        this.listener.once('fatal', reject);
        this.abort.signal.addEventListener('abort', () => reject(this.abort.signal.reason), { once: true });
      });
      this.life.set('running');
      this.listener.start(from);
      await ready;
      this.chooser?.start();
    } catch (err) {
      if (this.abort.signal.aborted) throw err; // closed while starting: close() finishes the job
      await this.teardown();
      this.life.set('failed');
      throw err;
    }
  }

  /** The server_id of the primary (is the source the primary under another address?); undefined when it does not answer. */
  private async serverIdOf(primary: MysqlConfig): Promise<string | undefined> {
    try {
      const conn = await connectWithin(mysqlFor(primary, 'tailer'), 5_000, 'connecting to the primary');
      try {
        const [rows] = await withTimeout(conn.query('SELECT @@server_id AS id'), 5_000, 'asking the primary its server_id');
        return String((rows as { id: unknown }[])[0]?.id);
      } finally {
        await conn.end().catch(() => undefined);
      }
    } catch {
      return undefined;
    }
  }

  /** MySQL may be restarting: keep trying (with backoff) until it answers or we are closed. */
  private async connectWithRetry(): Promise<Connection> {
    let delay = this.config.tailer.reconnectInitialMs;
    for (let attempt = 1; ; attempt++) {
      this.abort.signal.throwIfAborted();
      try {
        return await connectMysql(mysqlFor(this.config.mysql, 'tailer'), { database: false });
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        // Wrong credentials or an unknown host will not fix themselves.
        if (/ER_ACCESS_DENIED|ER_DBACCESS_DENIED|ENOTFOUND|ER_NOT_SUPPORTED_AUTH/.test(code)) throw err;
        if (attempt === 1 || attempt % 10 === 0) this.logger.warn({ err: errorMessage(err), code, retryInMs: delay }, 'cannot reach MySQL; retrying');
        await sleep(delay, this.abort.signal);
        delay = Math.min(delay * 2, this.config.tailer.reconnectMaxMs);
      }
    }
  }

  /** Turns rows into ops (each with the next sequence number) in `b`, bad ones into dead letters. */
  private decodeInto(b: Batch, rows: readonly BinlogRow[], source: string): void {
    const limits = { maxItemBytes: this.config.memcached.maxItemBytes };
    for (const row of rows) {
      const t = ++this.txnSeq;
      let d = decodeRow(row.values, t, row.timeSec, limits);
      if (row.unexpected) {
        const reason =
          row.unexpected === 'xa'
            ? `written in a two-phase XA transaction, which mcrepl does not support; not applied (write cache entries outside XA)`
            : `${row.unexpected.toUpperCase()} on ${STORAGE_TABLE} is not a cache operation (it must only receive INSERTs; is it still ENGINE=BLACKHOLE?)`;
        const instead = d.ok ? (d.op.kind === 'flush' ? undefined : { kind: 'delete' as const, t, nsId: d.op.nsId, key: d.op.key }) : d.instead;
        d = { ok: false, reason, row: describeRow(row.values), ...(instead ? { instead } : {}) };
      }
      if (d.ok) {
        b.add(d.op);
        this.stats.ops++;
      } else {
        if (d.instead) b.add(d.instead);
        this.addDeadLetter(b, { reason: d.reason, row: d.row, source, keyDeleted: d.instead !== undefined });
      }
    }
  }

  /** Rows of a large transaction, before its end: staged in Redis chunk by chunk. */
  private onRows(chunk: BinlogRowChunk): void {
    if (this.life.state !== 'running') return;
    const o = (this.open ??= { refs: [], ready: Promise.resolve(), rows: 0, startSeq: this.txnSeq, deadLetters: [], moreDeadLetters: 0 });
    if (o.rows === 0) this.logger.info({ gtid: chunk.gtid }, 'a large transaction: staging its ops in Redis as they arrive');
    this.stageChunk(o, chunk.rows, chunk.gtid ?? describePosition(this.listener.position));
  }

  private stageChunk(o: StagedTxn, rows: readonly BinlogRow[], source: string): void {
    const b = new Batch(this.config.partitions, this.txnSeq);
    this.decodeInto(b, rows, source);
    o.rows += rows.length;
    // Recorded if it commits; at most as many as the dead-letter list keeps, the rest counted.
    const room = Math.max(0, this.config.deadLetters.maxEntries - o.deadLetters.length);
    o.deadLetters.push(...b.deadLetters.slice(0, room));
    o.moreDeadLetters += Math.max(0, b.deadLetters.length - room);
    this.inFlightBytes += b.bytes;
    this.applyPressure();
    const prev = o.ready;
    o.ready = (async () => {
      await prev; // in order; a failed chunk fails the rest
      try {
        // Abandoned (read again after a reconnect, or dropped by a rewind): nothing more to store.
        if (o.abandoned) return;
        if (b.opCount > 0) o.refs.push(...(await this.persist('stage a large transaction', () => this.producer.stage(this.epoch, b))));
        this.stats.stagedChunks++;
      } finally {
        this.inFlightBytes -= b.bytes;
        this.relievePressure();
      }
    })();
    // Reported when the transaction ends (flushLoop); a Redis restart is acted on at once.
    o.ready.catch((err: unknown) => {
      if (err instanceof RewindNeeded) this.flushNow();
      else if (!(err instanceof LeaseLostError)) this.fail(err instanceof Error ? err : new Error(String(err)));
    });
  }

  /**
   * The binlog stream (re)connected: a transaction that was streaming in arrives again whole.
   * What was staged of it is overwritten under the same payload ids, or swept at the next start.
   */
  private abandonOpen(): void {
    const o = this.open;
    if (!o) return;
    this.open = undefined;
    o.abandoned = true;
    this.txnSeq = o.startSeq;
    this.logger.warn({ rows: o.rows }, 'binlog stream reconnected in the middle of a large transaction: reading it again');
  }

  private onTransaction(txn: BinlogTransaction): void {
    if (this.life.state !== 'running') return;
    this.stats.transactions++;
    const source = txn.gtid ?? describePosition(txn.position);
    const o = this.open;
    this.open = undefined;
    if (o || txn.streamed) {
      if (!o) {
        // Its first rows came while this tailer was not running yet: it cannot be whole.
        this.fail(new McreplError('PARTIAL_TRANSACTION', `transaction ${source} arrived without its first rows; restart the tailer to read it again`));
        return;
      }
      if (txn.rolledBack) o.outcome = 'rollback';
      else {
        this.stageChunk(o, txn.rows, source);
        o.outcome = txn.xa ? 'xa' : 'commit';
      }
      // It goes after what came before it, and before what comes after.
      if (!this.batch.isEmpty) this.sealed.push(this.batch);
      const staged = new Batch(this.config.partitions, this.txnSeq);
      staged.staged = o;
      staged.commit(txn.position, this.txnSeq, txn.commitTimeSec);
      if (o.outcome !== 'rollback') {
        staged.deadLetters.push(...o.deadLetters);
        if (o.moreDeadLetters > 0) {
          this.addDeadLetter(staged, { reason: `${o.moreDeadLetters} more bad rows in this transaction than the dead-letter list keeps; their keys were deleted where usable`, row: { rows: o.rows }, source, keyDeleted: false });
        }
      }
      if (o.outcome === 'xa') {
        this.addDeadLetter(staged, {
          reason: `a two-phase XA transaction of ${o.rows} rows, which mcrepl does not support: not applied (write cache entries outside XA)`,
          row: { rows: o.rows },
          source,
          keyDeleted: true,
        });
      }
      this.sealed.push(staged);
      this.batch = new Batch(this.config.partitions, this.txnSeq);
      this.logger.info({ rows: o.rows, outcome: o.outcome, source }, 'a large transaction ended');
      this.flushNow();
      return;
    }
    const b = this.batch;
    if (txn.rows.length > 0) this.decodeInto(b, txn.rows, source);
    b.commit(txn.position, this.txnSeq, txn.commitTimeSec);
    this.applyPressure();
    this.scheduleFlush();
  }

  /** Stops reading the binlog while too much waits to be enqueued or staged. */
  private applyPressure(): void {
    if (this.pendingBytes > this.config.tailer.maxPendingBytes && !this.listener.isPaused) {
      this.logger.debug({ pendingBytes: this.pendingBytes }, 'backpressure: pausing the binlog stream');
      this.stats.pauses++;
      this.listener.pause();
    }
  }

  private relievePressure(): void {
    if (this.listener.isPaused && this.pendingBytes < this.config.tailer.maxPendingBytes / 2) this.listener.resume();
  }

  /** Ops read and not yet in Redis: being enqueued or staged, in the next batch, or held by the pacer. */
  private get pendingBytes(): number {
    return this.inFlightBytes + this.batch.bytes + this.pacer.heldBytes;
  }

  private addDeadLetter(b: Batch, d: { reason: string; row: Record<string, unknown>; source: string; keyDeleted: boolean }): void {
    const entry: DeadLetter = { at: new Date().toISOString(), stage: 'tailer', reason: d.reason, op: d.row, source: d.source, ...(d.keyDeleted ? { action: 'key deleted everywhere instead' } : {}) };
    b.deadLetters.push(entry);
    this.stats.deadLetters++;
    this.logger.warn({ reason: d.reason, row: d.row, source: d.source }, 'bad row dead-lettered');
  }

  private scheduleFlush(): void {
    if (this.flushing) return; // the running flush picks the batch up when it finishes
    const b = this.batch;
    const cfg = this.config.tailer;
    if (this.sealed.length > 0) this.flushNow();
    else if (b.opCount > 0 || b.deadLetters.length > 0) {
      const wait = this.dueIn(b);
      if (wait <= 0) this.flushNow();
      else this.lingerTimer ??= setTimeout(() => this.flushNow(), wait);
    } else if (this.pacer.holding) {
      // Ops held for a data center whose queue was not empty: look again in a moment (other
      // tables' commits go along).
      this.lingerTimer ??= setTimeout(() => this.flushNow(), Math.max(1, cfg.lingerMs));
    } else if (b.transactions > 0) {
      // Only other tables' commits: move the checkpoint now and then, not on every commit.
      this.checkpointTimer ??= setTimeout(() => this.flushNow(), Math.max(0, this.lastSaveAt + cfg.checkpointIntervalMs - Date.now()));
    }
  }

  /**
   * How long a batch with ops should wait before it goes out (≤ 0: now): at most one batch per
   * lingerMs while ops keep coming (fewer, bigger jobs); the first op after a quiet spell, or a
   * full batch, goes out at once.
   */
  private dueIn(b: Batch): number {
    const cfg = this.config.tailer;
    if (b.opCount >= cfg.batchMaxOps || b.bytes >= cfg.batchMaxBytes) return 0;
    return this.lastFlushAt + cfg.lingerMs - performance.now();
  }

  private flushNow(): void {
    clearTimeout(this.lingerTimer);
    clearTimeout(this.checkpointTimer);
    this.lingerTimer = this.checkpointTimer = undefined;
    if (this.flushing || this.fatalError) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      if ((!this.batch.isEmpty || this.sealed.length > 0 || this.pacer.holding) && this.life.state === 'running') this.scheduleFlush();
    });
  }

  private async flushLoop(): Promise<void> {
    for (;;) {
      if (this.fatalError) return;
      if (this.rewindRequested) {
        await this.rewind();
        return;
      }
      let b = this.sealed.shift();
      if (!b) {
        b = this.batch;
        if (b.isEmpty && !this.pacer.holding) return;
        this.batch = new Batch(this.config.partitions, this.txnSeq);
      }
      if (b.opCount > 0 || b.deadLetters.length > 0) this.lastFlushAt = performance.now();
      const batchNo = ++this.batchNo;
      this.inFlightBytes += b.bytes;
      try {
        const staged = b.staged;
        if (b.opCount > 0 || this.pacer.holding) {
          // Held ops all go out before a large transaction's jobs, and when the tailer stops.
          const force = staged !== undefined || this.life.state !== 'running';
          const waiting = this.config.tailer.holdMaxMs > 0 && !force ? await this.persist('read queue lengths', () => this.producer.waitingCounts(this.config.partitions)) : () => 0;
          const planned = this.pacer.plan(b.opCount > 0 ? b : undefined, batchNo, waiting, Date.now(), force);
          if (planned.length > 0) this.stats.jobs += await this.persist('enqueue jobs', () => this.producer.enqueue(this.epoch, planned));
        }
        if (staged) {
          await staged.ready;
          // A few hundred jobs per write: each one short, retried on its own.
          const extra = staged.outcome === 'xa' ? { x: 1 as const } : {};
          for (let i = 0; i < staged.refs.length; i += STAGED_JOBS_PER_WRITE) {
            const refs = staged.refs.slice(i, i + STAGED_JOBS_PER_WRITE);
            if (staged.outcome === 'rollback') await this.persist('remove a rolled-back transaction', () => this.producer.discard(refs));
            else this.stats.jobs += await this.persist('enqueue a large transaction', () => this.producer.add(refs, extra));
          }
        }
        if (b.deadLetters.length > 0) await this.persist('record dead letters', () => this.deadLetters.add(b.deadLetters));
        // The checkpoint moves to the end of the newest batch none of whose ops are held.
        if (b.position) this.unsaved.push({ batchNo, position: b.position, txnSeq: b.txnSeq, sourceTimeSec: b.commitTimeSec });
        const oldestHeld = this.pacer.oldestHeld();
        let out: (typeof this.unsaved)[number] | undefined;
        while (this.unsaved.length > 0 && (oldestHeld === undefined || this.unsaved[0]!.batchNo < oldestHeld)) out = this.unsaved.shift();
        if (out) {
          const cp: Checkpoint = { position: out.position, txnSeq: out.txnSeq, epoch: this.epoch, savedAt: Date.now(), source: this.source, ...(out.sourceTimeSec !== undefined ? { sourceTimeSec: out.sourceTimeSec } : {}) };
          await this.persist('save checkpoint', () => this.store.save(cp));
          this.lastSaveAt = cp.savedAt;
          this.stats.lastCheckpoint = cp;
          this.stats.batches++;
          this.emit('checkpoint', cp);
        }
      } catch (err) {
        this.inFlightBytes -= b.bytes;
        if (err instanceof RewindNeeded) {
          await this.rewind();
          return;
        }
        this.fail(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.inFlightBytes -= b.bytes;
      this.relievePressure();
      // Ops that arrived meanwhile go out at once if lingerMs has passed since this batch was
      // taken (under load, what makes batches big), else when it has (scheduleFlush, called
      // when this loop ends). Other tables' commits alone wait for the checkpoint timer.
      if (this.life.state === 'running' && this.sealed.length === 0) {
        const next = this.batch;
        if ((next.opCount === 0 && next.deadLetters.length === 0) || this.dueIn(next) > 0) return;
      }
    }
  }

  /** Runs a Redis write until it succeeds; only losing the lease or a bug stops it. */
  private async persist<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let delay = 100;
    for (;;) {
      if (this.fatalError) throw this.fatalError;
      // Never write to a Redis that restarted before we know it did.
      await this.restarts.settled();
      if (this.rewindRequested) throw new RewindNeeded();
      // A passing failure (LeaseLostError is retriable): the daemon replaces the tailer, which
      // then stands by like any other.
      if (!this.lease.isHeld) throw new LeaseLostError(this.keys.tailerLease);
      try {
        // A command caught in a connection reset can stay pending forever: give up on it and
        // try again (a late success only duplicates jobs, which the workers skip).
        // Redis restarting or failing over meanwhile drops the attempt at once: its commands
        // may never be answered, and the rewind need not wait for the timeout.
        let onRestart: (() => void) | undefined;
        const restarted = new Promise<never>((_, reject) => this.restarts.once('restarted', (onRestart = () => reject(new RewindNeeded()))));
        try {
          return await withTimeout(Promise.race([fn(), restarted]), PERSIST_ATTEMPT_TIMEOUT_MS, `${what} timed out`);
        } finally {
          this.restarts.off('restarted', onRestart!);
        }
      } catch (err) {
        if (err instanceof TypeError || err instanceof RangeError || err instanceof LeaseLostError || err instanceof RewindNeeded) throw err;
        this.logger.warn({ err: errorMessage(err), retryInMs: delay }, `could not ${what}; retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  /**
   * After a Redis restart: what Redis kept may end before what we sent it (a machine crash
   * loses up to a second of AOF). Drop what is in memory and replay the binlog from the
   * checkpoint Redis has; jobs that survived are recognised by the workers and skipped.
   */
  private async rewind(): Promise<void> {
    this.rewindRequested = false;
    await this.listener.stop();
    let cp: Checkpoint | null = null;
    for (let delay = 100; ; delay = Math.min(delay * 2, 5_000)) {
      try {
        cp = await this.store.load();
        break;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.logger.warn({ err: errorMessage(err) }, 'could not read the checkpoint; retrying');
        await sleep(delay, this.abort.signal).catch(() => undefined);
      }
    }
    if (!cp) {
      this.fail(new McreplError('CHECKPOINT_LOST', 'Redis restarted (or failed over to a replica) without the checkpoint: where to resume is unknown. Flush the memcached servers (or the namespaces), then start the tailer with --reset-checkpoint'));
      return;
    }
    this.logger.warn({ from: describePosition(cp.position), txnSeq: cp.txnSeq }, 'Redis restarted or failed over: replaying from the checkpoint it kept');
    this.epoch = cp.epoch;
    this.txnSeq = cp.txnSeq;
    this.batch = new Batch(this.config.partitions, cp.txnSeq);
    this.sealed.length = 0;
    this.pacer.clear();
    this.unsaved = [];
    if (this.open) this.open.abandoned = true;
    this.open = undefined;
    // What is still in flight (chunks being staged) takes its own bytes off when it settles.
    this.listener.resume();
    if (this.life.state === 'running') this.listener.start(cp.position);
  }

  /** Where the binlog the tailer reads ends now (cached a few seconds; null if it cannot be asked). */
  private headPosition(): Promise<Position | null> {
    if (this.head && Date.now() - this.head.at < 5_000) return this.head.position;
    const position = (async () => {
      const conn = await connectWithin(mysqlFor(this.config.mysql, 'tailer'), 5_000, 'connecting to the source');
      try {
        return await withTimeout(currentBinlogPosition(conn), 5_000, "reading the source's binlog position");
      } finally {
        conn.destroy();
      }
    })().catch(() => null);
    this.head = { at: Date.now(), position };
    return position;
  }

  private fail(err: Error): void {
    if (this.fatalError || this.life.state === 'stopped') return;
    this.fatalError = err;
    this.logger.error({ err: errorMessage(err), code: (err as McreplError).code }, 'tailer failed');
    this.life.set('failed');
    void this.teardown()
      .catch(() => undefined)
      .finally(() => this.emit('fatal', err));
  }

  /** Stops reading, enqueues what was read, saves the checkpoint, releases the lease. */
  async close(): Promise<void> {
    if (this.life.state === 'stopped') return;
    const failed = this.life.state === 'failed';
    if (!failed) this.life.set('stopping');
    this.abort.abort(new McreplError('CLOSED', 'tailer closed'));
    await this.listener.stop();
    if (!failed && !this.fatalError && this.lease.isHeld) {
      if (this.flushing) await this.flushing;
      if (!this.batch.isEmpty || this.sealed.length > 0 || this.pacer.holding) {
        this.flushNow();
        await this.flushing;
      }
    }
    await this.teardown();
    if (!failed) this.life.set('stopped');
  }

  private tornDown = false;
  private async teardown(): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    this.stopCollecting();
    clearTimeout(this.lingerTimer);
    clearTimeout(this.checkpointTimer);
    await this.chooser?.stop();
    await this.listener.stop();
    if (this.flushing) await this.flushing.catch(() => undefined);
    await this.lease.release();
    await this.producer.close().catch(() => undefined);
    this.redis.disconnect();
  }
}
