/**
 * Removes the rows of expired keys from the key registry (mc_stored_keys), which otherwise only
 * grows: every key ever set with a TTL would stay there until a flush or delete, and flushes
 * would walk them all.
 *
 * A job of the active tailer (`sweepWhileRunning`: only while it holds its lease), not a MySQL
 * EVENT; docs/decisions/0018-registry-expiry.md says why. Each sweep calls
 * `mc_sweep_expired(batch, grace)` (sql/040_registry_expiry.sql) until a batch comes back short:
 * one short transaction per batch, rows a concurrent set holds skipped, nothing written to
 * mc_storage (so no cache op), and the tailer's account needs only EXECUTE on that procedure.
 * A failed sweep is logged and tried again at the next interval; it never stops the tailer.
 */
import type { Connection, RowDataPacket } from 'mysql2/promise';
import type { MysqlConfig, RegistryConfig } from '../config/schema.js';
import type { LifecycleState } from '../coordination/lifecycle.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { connectMysql } from './mysql.js';

export interface SweepResult {
  /** Registry rows removed. */
  removed: number;
  /** Calls of mc_sweep_expired() (transactions). */
  batches: number;
  ms: number;
}

export interface RegistrySweeperStats {
  sweeps: number;
  removed: number;
  failures: number;
}

/** How often the running totals are logged at info level (when anything was removed meanwhile). */
const REPORT_EVERY_MS = 60 * 60 * 1000;
/** The sweep's connection waits at most this long for a table lock (an ALTER under way), in seconds. */
const LOCK_WAIT_S = 10;

/** What a failed call means for the operator, when it is a known setup problem. */
function hint(err: unknown): string | undefined {
  const code = (err as { code?: string }).code;
  if (code === 'ER_PROCACCESS_DENIED_ERROR') return "the tailer's MySQL account may not run mc_sweep_expired(); run `mcrepl schema install` (it grants EXECUTE on it)";
  if (code === 'ER_SP_DOES_NOT_EXIST') return 'mc_sweep_expired() is not installed; run `mcrepl schema install`';
  return undefined;
}

export class RegistrySweeper {
  readonly stats: RegistrySweeperStats = { sweeps: 0, removed: 0, failures: 0 };
  private timer: NodeJS.Timeout | undefined;
  private conn: Connection | undefined;
  /** The sweep under way: sweeps never overlap. */
  private current: Promise<unknown> = Promise.resolve();
  private started = false;
  private closing: Promise<void> | undefined;
  private consecutiveFailures = 0;
  private reportedAt = Date.now();
  private removedSinceReport = 0;

  constructor(
    private readonly mysql: MysqlConfig,
    private readonly cfg: RegistryConfig,
    private readonly logger: Logger,
  ) {}

  /** Started and not closed (with sweepIntervalMs 0 it never starts). */
  get isRunning(): boolean {
    return this.started && !this.closing;
  }

  /** Sweeps every sweepIntervalMs from now on, the first after one interval. */
  start(): void {
    if (this.started || this.closing || this.cfg.sweepIntervalMs === 0) return;
    this.started = true;
    this.logger.debug({ intervalMs: this.cfg.sweepIntervalMs, batch: this.cfg.sweepBatch, graceS: this.cfg.sweepGraceS }, 'registry sweeper started');
    this.schedule();
  }

  private schedule(): void {
    if (this.closing) return;
    this.timer = setTimeout(() => {
      void this.sweep()
        .catch(() => undefined) // logged by sweep()
        .finally(() => this.schedule());
    }, this.cfg.sweepIntervalMs);
    this.timer.unref();
  }

  /**
   * One sweep: batches of at most sweepBatch rows until one comes back short (or the sweeper is
   * closed). Waits for a sweep already under way first. Throws what MySQL threw, after logging it.
   */
  sweep(): Promise<SweepResult> {
    const run = this.current.catch(() => undefined).then(() => this.sweepNow());
    this.current = run;
    return run;
  }

  private async sweepNow(): Promise<SweepResult> {
    const started = performance.now();
    if (this.closing) return { removed: 0, batches: 0, ms: 0 };
    let removed = 0;
    let batches = 0;
    try {
      const conn = await this.connection();
      for (;;) {
        const [results] = await conn.query<RowDataPacket[][]>('CALL mc_sweep_expired(?, ?)', [this.cfg.sweepBatch, this.cfg.sweepGraceS]);
        const n = Number(results[0]?.[0]?.removed ?? 0);
        removed += n;
        batches++;
        if (n < this.cfg.sweepBatch || this.closing) break;
      }
    } catch (err) {
      this.stats.failures++;
      this.consecutiveFailures++;
      this.dropConnection();
      // Once, then now and then: the same setup problem recurs at every interval.
      if (this.consecutiveFailures === 1 || this.consecutiveFailures % 60 === 0) {
        this.logger.warn({ err: errorMessage(err), code: (err as { code?: string }).code, removed, failures: this.consecutiveFailures, fix: hint(err) }, 'registry sweep failed; trying again at the next interval');
      }
      this.count(removed);
      throw err;
    }
    this.consecutiveFailures = 0;
    this.stats.sweeps++;
    this.count(removed);
    const ms = Math.round(performance.now() - started);
    this.logger.debug({ removed, batches, ms }, 'registry sweep');
    if (this.removedSinceReport > 0 && Date.now() - this.reportedAt >= REPORT_EVERY_MS) this.report();
    return { removed, batches, ms };
  }

  private count(removed: number): void {
    this.stats.removed += removed;
    this.removedSinceReport += removed;
  }

  private report(): void {
    this.logger.info({ removed: this.removedSinceReport, sinceMinutes: Math.round((Date.now() - this.reportedAt) / 60_000), totalRemoved: this.stats.removed, sweeps: this.stats.sweeps, failures: this.stats.failures }, 'registry sweeper: expired keys removed from the registry');
    this.reportedAt = Date.now();
    this.removedSinceReport = 0;
  }

  private async connection(): Promise<Connection> {
    if (this.conn) return this.conn;
    const conn = await connectMysql(this.mysql);
    conn.on('error', () => this.dropConnection());
    await conn.query(`SET SESSION lock_wait_timeout = ${LOCK_WAIT_S}, innodb_lock_wait_timeout = ${LOCK_WAIT_S}`);
    this.conn = conn;
    return conn;
  }

  private dropConnection(): void {
    const conn = this.conn;
    this.conn = undefined;
    conn?.destroy();
  }

  /** Stops sweeping: the batch under way finishes, no other starts. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      await this.current.catch(() => undefined);
      const conn = this.conn;
      this.conn = undefined;
      await conn?.end().catch(() => conn.destroy());
      if (this.removedSinceReport > 0) this.report();
      if (this.started) this.logger.debug({ ...this.stats }, 'registry sweeper stopped');
    })();
    return this.closing;
  }
}

/**
 * Runs `sweeper` while `component` (the tailer) is `running`, which it is only while it holds
 * its lease, and closes it when the component stops or fails. A standby tailer never sweeps.
 */
export function sweepWhileRunning(component: { on(event: 'state', listener: (s: LifecycleState) => void): unknown }, sweeper: RegistrySweeper): void {
  component.on('state', (s) => {
    if (s === 'running') sweeper.start();
    else if (s === 'stopping' || s === 'stopped' || s === 'failed') void sweeper.close();
  });
}
