/**
 * Reads the binlog with zongji and hands over committed transactions, in commit order.
 *
 * - Only rows of the storage table are kept; every commit (of any table) is still reported,
 *   with the position just after it, so the checkpoint keeps moving on a busy server.
 * - A transaction that ends in ROLLBACK (non-transactional engines log one) hands over nothing
 *   but its position: its rows never happened, and the registry rolled back with them.
 * - zongji never reconnects: on an error this stops it and starts a new instance, after a
 *   backoff, from the position of the last transaction handed over. The half-received
 *   transaction is dropped and arrives again whole.
 * - Error 1236 (the binlog we need was purged) is fatal: retrying cannot help. Unless the server's
 *   binlog ends before the resume position (a replica that has not caught up with the checkpoint
 *   yet, which answers the same): then it waits for it, with a warning, and tries again.
 * - zongji has no backpressure; pause() stops reading the socket.
 * - A transaction of any size streams through: its rows are handed over in chunks of at most
 *   `chunkRows` (`rows`) as they arrive, and its end (`transaction`, with the rest of its rows)
 *   says whether it committed, so nothing holds a whole transaction in memory. Small
 *   transactions arrive whole in their `transaction` event, as before.
 */
import { EventEmitter } from 'node:events';
import ZongJi, { type AnyBinlogEvent, type QueryEvent, type WriteRowsEvent, type RowsEvent } from '@vlasky/zongji';
import type { MysqlConfig } from '../config/schema.js';
import { BinlogPurgedError, errorMessage } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import mysql from 'mysql2/promise';
import type { Position } from './checkpoint-store.js';
import { currentBinlogPosition } from './position.js';
import { serverIsBehind } from './source-lag.js';

export interface BinlogRow {
  /** Column values of the storage table row. */
  values: Record<string, unknown>;
  /**
   * Set when the row is not a plain committed INSERT: an UPDATE or DELETE (mc_storage must only
   * receive INSERTs), or part of a two-phase XA transaction (not supported).
   */
  unexpected?: 'update' | 'delete' | 'xa';
  /** Time of the row's statement (its rows event), unix seconds: TTLs count from it. */
  timeSec: number;
}

/** Rows of a transaction still open (more follow; its end comes as a `transaction`). */
export interface BinlogRowChunk {
  rows: BinlogRow[];
  gtid?: string;
}

export interface BinlogTransaction {
  /** Its rows, or the rows after those already handed over in `rows` chunks (`streamed`). */
  rows: BinlogRow[];
  /** Some of its rows were handed over before, in `rows` chunks. */
  streamed?: boolean;
  /**
   * It ended in ROLLBACK: its rows never happened. Rows already streamed must be discarded;
   * `rows` is empty.
   */
  rolledBack?: boolean;
  /** A two-phase XA transaction (not supported): its rows, streamed ones too, must not be applied. */
  xa?: boolean;
  /** GTID of the transaction, when the server has GTIDs. */
  gtid?: string;
  /** Position just after this transaction's commit. */
  position: Position;
  /** Time of the commit event, unix seconds: the moment the writes became real. */
  commitTimeSec: number;
}

export interface BinlogListenerEvents {
  /** Rows of the open transaction, handed over before its end (large transactions). */
  rows: [BinlogRowChunk];
  transaction: [BinlogTransaction];
  /**
   * Connected and streaming (after each (re)connect), from this position. A transaction that
   * was streaming when the connection broke is abandoned: it arrives again whole.
   */
  ready: [Position];
  /** Unrecoverable: the caller must stop. */
  fatal: [Error];
}

export interface BinlogListenerOptions {
  mysql: MysqlConfig;
  table: string;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  /** Heartbeat period asked of the server while the binlog is idle. */
  heartbeatMs: number;
  /** Silence (no bytes at all) longer than this is a dead connection. */
  stallTimeoutMs: number;
  /** A transaction's rows are handed over in chunks of at most this many (default 5,000). */
  chunkRows?: number;
  logger: Logger;
}

const EVENTS = ['tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'query', 'gtid', 'mariadbgtid', 'rotate', 'format', 'xaprepare', 'heartbeat'];

export class BinlogListener extends EventEmitter<BinlogListenerEvents> {
  private zongji: ZongJi | undefined;
  private current: { rows: BinlogRow[]; gtid?: string; streamed?: boolean; xa?: boolean } | undefined;
  private readonly chunkRows: number;
  /** Where to resume after a reconnect: just after the last transaction handed over. */
  private resumeFrom: Position = {};
  private paused = false;
  private stopped = true;
  private backoffMs: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private generation = 0;
  /** The server read now (`opts.mysql`, until switchSource). */
  private source: MysqlConfig;

  constructor(private readonly opts: BinlogListenerOptions) {
    super();
    this.source = opts.mysql;
    this.backoffMs = opts.reconnectInitialMs;
    this.chunkRows = opts.chunkRows ?? 5_000;
  }

  /** The position the listener would resume from now. */
  get position(): Position {
    return this.resumeFrom;
  }

  /** Streams the transactions after `from` (see currentBinlogPosition for "from now on"). */
  start(from: Position): void {
    this.resumeFrom = from;
    this.stopped = false;
    this.connect();
  }

  /**
   * Reads another server's binlog from now on (the same history: a replica logging the
   * primary's GTIDs). Reconnects at once at the position of the last transaction handed over;
   * the transaction arriving now is dropped and arrives again whole, as after any reconnect.
   */
  switchSource(source: MysqlConfig): void {
    this.source = source;
    if (this.stopped) return;
    clearTimeout(this.restartTimer);
    clearInterval(this.watchdog);
    const z = this.zongji;
    this.zongji = undefined;
    this.generation++;
    z?.stop();
    this.backoffMs = this.opts.reconnectInitialMs;
    this.connect();
  }

  /** `host:port` of the server read now. */
  get server(): string {
    return `${this.source.host}:${this.source.port}`;
  }

  private connect(): void {
    const gen = ++this.generation;
    const mysql = this.source;
    const z = new ZongJi({
      host: mysql.host,
      port: mysql.port,
      user: mysql.user,
      password: mysql.password,
      charset: 'utf8mb4',
      connectTimeout: mysql.connectTimeoutMs,
    });
    this.zongji = z;
    this.current = undefined;
    const from = this.resumeFrom;
    const startOpts: Record<string, unknown> = {
      serverId: mysql.serverId,
      includeEvents: EVENTS,
      includeSchema: { [mysql.database]: [this.opts.table] },
    };
    if (from.gtidSet) startOpts.gtidSet = from.gtidSet;
    else if (from.file) {
      startOpts.filename = from.file;
      startOpts.position = from.pos;
    } else {
      throw new Error('the binlog listener needs a position to start from');
    }

    z.on('ready', () => {
      if (gen !== this.generation) return;
      this.opts.logger.info({ from, source: `${mysql.host}:${mysql.port}`, server: z.serverVersion }, 'binlog stream ready');
      if (this.paused) z.connection?.pause();
      this.emit('ready', from);
    });
    z.on('binlog', (event: AnyBinlogEvent) => {
      if (gen !== this.generation || this.stopped) return;
      try {
        this.onEvent(z, event);
      } catch (err) {
        this.emit('fatal', err instanceof Error ? err : new Error(String(err)));
      }
    });
    z.on('error', (err: Error) => {
      if (gen !== this.generation || this.stopped) return;
      this.onError(err);
    });
    z.start(startOpts);
    // Ask for heartbeats while the binlog is idle. Queued on the binlog connection before any
    // of zongji's own commands, hence before the dump request. (MySQL 8.0.26+ reads the
    // source_ spelling; the other is for MariaDB and older MySQL.)
    const ns = BigInt(this.opts.heartbeatMs) * 1_000_000n;
    z.connection?.query(`SET @master_heartbeat_period = ${ns}, @source_heartbeat_period = ${ns}`, (err: Error | null) => {
      if (err && gen === this.generation) this.opts.logger.warn({ err: err.message }, 'could not ask for binlog heartbeats');
    });
    this.watch(gen, z);
  }

  /**
   * A connection can die without a word (a dropped NAT entry, a frozen server): no event and no
   * heartbeat for stallTimeoutMs, while we are reading, means it is gone. Counted in bytes
   * received, so a long transaction of other tables (filtered out) is not mistaken for silence.
   */
  private watch(gen: number, z: ZongJi): void {
    clearInterval(this.watchdog);
    let lastBytes = -1;
    let lastChange = Date.now();
    this.watchdog = setInterval(() => {
      if (gen !== this.generation) return;
      const stream = (z.connection as unknown as { stream?: { bytesRead?: number } } | null)?.stream;
      const bytes = stream?.bytesRead ?? 0;
      if (bytes !== lastBytes || this.paused || !z.ready) {
        lastBytes = bytes;
        lastChange = Date.now();
        return;
      }
      if (Date.now() - lastChange > this.opts.stallTimeoutMs) {
        this.onError(Object.assign(new Error(`no event and no heartbeat for ${this.opts.stallTimeoutMs} ms: the binlog connection is dead`), { code: 'BINLOG_STALLED' }));
      }
    }, Math.max(100, Math.min(1_000, Math.floor(this.opts.stallTimeoutMs / 5))));
    this.watchdog.unref();
  }

  private onEvent(z: ZongJi, event: AnyBinlogEvent): void {
    const name = event.getEventName();
    switch (name) {
      case 'gtid':
      case 'mariadbgtid':
        if (this.current && (this.current.rows.length > 0 || this.current.streamed)) {
          // Every row-carrying group ends with XID or COMMIT; a GTID arriving first means the
          // marker was lost. Hand the rows over rather than drop them.
          this.opts.logger.warn({ gtid: this.current.gtid }, 'transaction without a commit marker; treating it as committed');
          this.commit(z, event.timestamp);
        }
        this.current = { rows: [], gtid: event.gtid };
        return;
      case 'writerows':
      case 'updaterows':
      case 'deleterows': {
        const e = event as RowsEvent & { rows: unknown[] };
        const table = e.tableMap[e.tableId];
        if (!table || table.tableName !== this.opts.table || table.parentSchema !== this.source.database) return;
        const cur = (this.current ??= { rows: [], gtid: event.gtid });
        const timeSec = Math.floor(event.timestamp / 1000);
        if (name === 'writerows') {
          for (const values of (event as WriteRowsEvent).rows) cur.rows.push({ values, timeSec });
        } else {
          for (const r of e.rows) {
            const values = (name === 'updaterows' ? (r as { after: Record<string, unknown> }).after : r) as Record<string, unknown>;
            cur.rows.push({ values, unexpected: name === 'updaterows' ? 'update' : 'delete', timeSec });
          }
        }
        if (cur.rows.length >= this.chunkRows) {
          // A large transaction: hand its rows over as they come rather than hold them all.
          const rows = cur.rows;
          cur.rows = [];
          cur.streamed = true;
          this.emit('rows', { rows, ...(cur.gtid ? { gtid: cur.gtid } : {}) });
        }
        return;
      }
      case 'xid':
        this.commit(z, event.timestamp);
        return;
      case 'xaprepare':
        // XA COMMIT ... ONE PHASE commits here. A two-phase XA transaction commits later, in a
        // group of its own that carries no rows; its rows are handed over marked, to be
        // dead-lettered rather than applied before (or without) the commit.
        if (!(event as { onePhase?: boolean }).onePhase && this.current) {
          for (const r of this.current.rows) r.unexpected = 'xa';
          this.current.xa = true;
        }
        this.commit(z, event.timestamp);
        return;
      case 'query': {
        const q = (event as QueryEvent).query.trim().toUpperCase();
        if (q === 'COMMIT' || q.startsWith('XA COMMIT')) this.commit(z, event.timestamp);
        else if (q === 'ROLLBACK' || q.startsWith('XA ROLLBACK')) {
          const streamed = this.current?.streamed;
          if (this.current && (this.current.rows.length > 0 || streamed)) {
            this.opts.logger.debug({ gtid: this.current.gtid, rows: this.current.rows.length, streamed }, 'rolled-back transaction: its rows are ignored');
          }
          this.current = { rows: [], ...(streamed ? { streamed } : {}) };
          this.commit(z, event.timestamp, true);
        }
        return;
      }
      default:
        return;
    }
  }

  private currentPosition(z: ZongJi): Position {
    const position: Position = {};
    // An empty set means "no GTIDs seen" (GTIDs off, or none yet): resuming from it would ask
    // for the whole binlog, so the file and offset are used instead.
    const gtidSet = z.gtidSet;
    if (gtidSet) position.gtidSet = gtidSet;
    if (z.options.filename) {
      position.file = z.options.filename;
      position.pos = z.options.position;
    }
    return position;
  }

  private commit(z: ZongJi, eventTimeMs: number, rolledBack = false): void {
    const position = this.currentPosition(z);
    const cur = this.current;
    const txn: BinlogTransaction = { rows: cur?.rows ?? [], position, commitTimeSec: Math.floor(eventTimeMs / 1000) };
    if (cur?.gtid) txn.gtid = cur.gtid;
    if (cur?.streamed) txn.streamed = true;
    if (cur?.xa) txn.xa = true;
    if (rolledBack) txn.rolledBack = true;
    this.current = undefined;
    this.resumeFrom = position;
    this.backoffMs = this.opts.reconnectInitialMs;
    this.emit('transaction', txn);
  }

  private onError(err: Error & { code?: string; errno?: number }): void {
    clearInterval(this.watchdog);
    const z = this.zongji;
    this.zongji = undefined;
    this.generation++;
    z?.stop();
    if (err.errno === 1236 || /\b1236\b|could not find (first log|GTID state)|purged binary logs/i.test(err.message)) {
      // A replica that has not yet reached the checkpoint (it was behind when the tailer was
      // pointed at it) answers the same way as a server whose binlog was purged: ask it where
      // its binlog ends. Behind: wait for it. Otherwise the binlog really is gone.
      const gen = this.generation;
      void this.sourceIsBehind().then((behind) => {
        if (this.stopped || gen !== this.generation) return;
        if (!behind) return this.purged(err);
        this.opts.logger.warn({ from: this.resumeFrom, source: this.server, retryInMs: this.backoffMs }, 'the source has not reached the checkpoint yet (a replica behind the server the checkpoint came from): waiting for it to catch up');
        this.retryLater();
      });
      return;
    }
    this.onConnectionError(err);
  }

  /** The server's binlog ends before the resume position (it lacks transactions the checkpoint covers). */
  private async sourceIsBehind(): Promise<boolean> {
    if (!this.resumeFrom.gtidSet) return false;
    try {
      const src = this.source;
      const conn = await mysql.createConnection({ host: src.host, port: src.port, user: src.user, password: src.password ?? '', connectTimeout: src.connectTimeoutMs });
      try {
        const at = await currentBinlogPosition(conn);
        return serverIsBehind(this.resumeFrom, at);
      } finally {
        await conn.end().catch(() => undefined);
      }
    } catch {
      return false;
    }
  }

  private purged(err: Error): void {
    {
      const where = JSON.stringify(this.resumeFrom);
      this.emit(
        'fatal',
        new BinlogPurgedError(
          `the binlog the tailer must resume from (${where}) is no longer on the server: ${err.message}. ` +
            'Changes made since then cannot be replayed. To recover: flush every memcached server (or each namespace with ' +
            '`mcrepl flush`), then start the tailer with --reset-checkpoint to continue from the current end of the binlog.',
          err,
        ),
      );
    }
  }

  private onConnectionError(err: Error & { code?: string; errno?: number }): void {
    if (/same server_uuid\/server_id is already connected/i.test(err.message)) {
      this.opts.logger.error(
        { serverId: this.source.serverId },
        'another binlog reader is connected with the same server_id: give each mcrepl deployment (and every replica) its own mysql.serverId',
      );
    }
    this.opts.logger.warn({ err: errorMessage(err), code: err.code, retryInMs: this.backoffMs, from: this.resumeFrom }, 'binlog connection failed; reconnecting');
    this.retryLater();
  }

  private retryLater(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.reconnectMaxMs);
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, delay);
  }

  /** Stop reading from the socket (backpressure). Safe to call repeatedly. */
  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.zongji?.connection?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.zongji?.connection?.resume();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.restartTimer);
    clearInterval(this.watchdog);
    const z = this.zongji;
    this.zongji = undefined;
    if (z) await stopZongji(z);
  }
}

/** Stops a zongji instance; resolves once it says it stopped, or after 3 s. */
export function stopZongji(z: ZongJi): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(resolve, 3_000);
    z.once('stopped', () => {
      clearTimeout(t);
      resolve();
    });
    z.stop();
  });
}
