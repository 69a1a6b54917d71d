/**
 * Which server a site's tailer reads when its source is a replica (docs/decisions/0024).
 *
 * A replica far behind the primary (cut off from it, restarting, slow to apply a backlog) holds
 * its site back, while the primary's binlog, even across a WAN, streams at full speed: it is one
 * way, so distance costs latency, not throughput. So once the tailer has read what the replica
 * has and the replica is `behindTransactions` or more behind the primary, the tailer reads the
 * primary instead; it goes back to the replica (local, and off the WAN) as soon as the replica
 * holds everything the tailer has read. The replica logs what it applies with the primary's GTIDs
 * (log_slave_updates), so both binlogs are one history and a switch is a reconnect at the
 * tailer's position: nothing is skipped, and nothing is read twice beyond the transaction that
 * was arriving when it switched (which arrives again whole, as after any reconnect).
 */
import { EventEmitter } from 'node:events';
import mysql from 'mysql2/promise';
import type { MysqlConfig } from '../config/schema.js';
import { withTimeout } from '../coordination/timeout.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Position } from './checkpoint-store.js';
import { currentBinlogPosition } from './position.js';
import { transactionsBehind } from './source-lag.js';

export type SourceRole = 'replica' | 'primary';

export interface SourceView {
  /** Where the replica's binlog ends; undefined when it did not answer. */
  replica: Position | undefined;
  /** Where the primary's binlog ends; undefined when it did not answer. */
  primary: Position | undefined;
  /** The primary has not answered for several looks in a row (one slow answer is not a cut). */
  primaryGone?: boolean;
  /** What the tailer has read (the position it would resume from). */
  read: Position;
  /** The primary is read instead of a replica this many transactions or more behind it. */
  behindTransactions: number;
}

/**
 * The server to read next, from what the last look saw (pure; GTID positions only: without
 * GTIDs two servers' binlogs cannot be compared, and the tailer stays on the replica).
 */
export function chooseSource(current: SourceRole, v: SourceView): SourceRole {
  if (current === 'replica') {
    if (!v.primary) return 'replica';
    const tailerBehind = transactionsBehind(v.primary, v.read);
    if (tailerBehind === null || tailerBehind < v.behindTransactions) return 'replica';
    // The tailer itself may be what is slow: then the replica has more than it read, and the
    // primary would not help. Switch only when the replica is what holds it back.
    if (v.replica) {
      const replicaBehind = transactionsBehind(v.primary, v.replica);
      const unread = transactionsBehind(v.replica, v.read);
      if (replicaBehind === null || replicaBehind < v.behindTransactions || unread === null || unread > v.behindTransactions / 10) return 'replica';
    }
    return 'primary';
  }
  // Back once the replica has everything read so far and has caught up with the primary (within
  // half the bound, so that one look does not send the tailer back and the next away again),
  // or the primary no longer answers (cut off: the replica may have more to give).
  if (!v.replica || !v.read.gtidSet || transactionsBehind(v.read, v.replica) !== 0) return 'primary';
  if (!v.primary) return v.primaryGone ? 'replica' : 'primary';
  const replicaBehind = transactionsBehind(v.primary, v.replica);
  return replicaBehind !== null && replicaBehind < v.behindTransactions / 2 ? 'replica' : 'primary';
}

export interface SourceChooserOptions {
  replica: MysqlConfig;
  primary: MysqlConfig;
  behindTransactions: number;
  checkMs: number;
  logger: Logger;
  /** What the tailer has read. */
  read: () => Position;
}

export interface SourceChooserEvents {
  /** Read this server from now on. */
  switch: [SourceRole, MysqlConfig];
}

/** Looks at both servers every `checkMs` and says when the tailer should read the other one. */
export class SourceChooser extends EventEmitter<SourceChooserEvents> {
  private role: SourceRole = 'replica';
  private timer: NodeJS.Timeout | undefined;
  private readonly conns = new Map<SourceRole, mysql.Connection>();
  private stopped = false;
  private looking: Promise<void> | undefined;
  private lastView: SourceView | undefined;
  /** Looks in a row the primary did not answer. */
  private primaryMissed = 0;

  constructor(private readonly opts: SourceChooserOptions) {
    super();
  }

  get current(): SourceRole {
    return this.role;
  }

  get config(): MysqlConfig {
    return this.role === 'replica' ? this.opts.replica : this.opts.primary;
  }

  start(): void {
    this.stopped = false;
    const tick = () => {
      if (this.stopped) return;
      this.looking = this.look().finally(() => {
        this.looking = undefined;
        if (!this.stopped) this.timer = setTimeout(tick, this.opts.checkMs);
      });
    };
    this.timer = setTimeout(tick, this.opts.checkMs);
  }

  /** One look at both servers; switches when chooseSource says so. */
  async look(): Promise<void> {
    // `read` first: a replica that has it when asked afterwards has it.
    const read = this.opts.read();
    const [replica, primary] = await Promise.all([this.position('replica'), this.position('primary')]);
    if (this.stopped) return;
    this.primaryMissed = primary ? 0 : this.primaryMissed + 1;
    const view: SourceView = { replica, primary, read, behindTransactions: this.opts.behindTransactions, primaryGone: this.primaryMissed >= 3 };
    this.lastView = view;
    const next = chooseSource(this.role, view);
    if (next === this.role) return;
    const from = this.role;
    this.role = next;
    const behind = primary && replica ? transactionsBehind(primary, replica) : null;
    this.opts.logger.warn(
      { from, to: next, replicaBehind: behind, replicaAnswered: replica !== undefined, server: `${this.config.host}:${this.config.port}` },
      next === 'primary' ? 'the replica is far behind the primary: reading the primary until it catches up' : 'the replica has caught up: reading it again',
    );
    this.emit('switch', next, this.config);
  }

  /** How far the replica is behind the primary at the last look (null: unknown). */
  get replicaBehind(): number | null {
    const v = this.lastView;
    return v?.primary && v.replica ? transactionsBehind(v.primary, v.replica) : null;
  }

  private async position(role: SourceRole): Promise<Position | undefined> {
    const cfg = role === 'replica' ? this.opts.replica : this.opts.primary;
    // A server cut off does not answer: give up on it for this look, and on its connection.
    const limit = Math.max(2_000, this.opts.checkMs);
    try {
      let conn = this.conns.get(role);
      if (!conn) {
        const connecting = mysql.createConnection({ host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password ?? '', connectTimeout: cfg.connectTimeoutMs });
        // Given up on, it may still connect later: then it is closed, not left open.
        conn = await withTimeout(connecting, limit, `connecting to ${cfg.host}:${cfg.port}`).catch((err: unknown) => {
          connecting.then((c) => c.destroy(), () => undefined);
          throw err;
        });
        conn.on('error', () => this.drop(role));
        if (this.stopped) {
          conn.destroy();
          return undefined;
        }
        this.conns.set(role, conn);
      }
      return await withTimeout(currentBinlogPosition(conn), limit, `asking ${cfg.host}:${cfg.port} where its binlog ends`);
    } catch (err) {
      this.opts.logger.debug({ role, err: errorMessage(err) }, 'source check: no answer');
      this.drop(role);
      return undefined;
    }
  }

  private drop(role: SourceRole): void {
    this.conns.get(role)?.destroy();
    this.conns.delete(role);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.looking?.catch(() => undefined);
    for (const role of [...this.conns.keys()]) this.drop(role);
  }
}
