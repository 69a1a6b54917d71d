/**
 * A lease in Redis: at most one holder at a time, renewed while the holder lives, released on
 * clean shutdown and expiring by itself after a crash. The tailer holds one (one active tailer
 * per source) and each data center's worker group holds one (one consumer per partition queue,
 * which is what keeps per-key order).
 *
 * Fencing: the holder counts the lease as its own only until two thirds of the TTL after the
 * last renewal Redis confirmed (renewals run every third of the TTL). Past that, whether Redis is
 * unreachable or the process was paused, it is `lost`, and the holder must stop acting before
 * another process can acquire it (at the full TTL). Writes that must never come from a stale
 * holder (the checkpoint, the applied watermarks) also check the owner inside Redis, in the same
 * script (`fenced`).
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { LeaseLostError } from '../errors.js';
import { runScript } from './redis.js';
import { withTimeout } from './timeout.js';

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
/** How soon a failed renewal is tried again. */
const RENEW_RETRY_MS = 250;

export interface LeaseEvents {
  lost: [LeaseLostError];
}

export class Lease extends EventEmitter<LeaseEvents> {
  readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private renewFailing = false;
  private held = false;
  /** When the last confirmed (re)acquisition was sent. */
  private renewedAt = 0;
  /** Each fenced script, with the owner check in front. */
  private readonly wrapped = new Map<string, string>();

  constructor(
    private readonly redis: Redis,
    readonly key: string,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {
    super();
  }

  /** Held, and recently enough confirmed that nobody else can hold it yet. */
  get isHeld(): boolean {
    return this.held && Date.now() < this.validUntil;
  }

  private get validUntil(): number {
    return this.renewedAt + Math.floor((this.ttlMs * 2) / 3);
  }

  /**
   * Throws LeaseLostError unless the lease is held (see isHeld): called right before a write
   * that only the holder may make (a fence).
   */
  check(): void {
    if (!this.isHeld) throw new LeaseLostError(this.key);
  }

  /** Who holds the lease now, if anyone. */
  static holder(redis: Redis, key: string): Promise<string | null> {
    return redis.get(key);
  }

  /** Waits until the lease is ours (or `signal` aborts); Redis being away only makes it wait longer. */
  async acquire(signal?: AbortSignal): Promise<void> {
    let announced = false;
    let unreachable = false;
    for (;;) {
      signal?.throwIfAborted();
      const sentAt = Date.now();
      try {
        // A command caught in a connection reset can stay unanswered for good (the connection
        // re-sends nothing after a reconnect): give up on it after a TTL and ask again. A late
        // OK only means the lease was ours for a while, unused; it expires.
        const ok = await withTimeout(this.redis.set(this.key, this.owner, 'PX', this.ttlMs, 'NX'), this.ttlMs, 'no answer from Redis to the lease request');
        if (ok === 'OK') {
          this.renewedAt = sentAt;
          break;
        }
        if (!announced) {
          const holder = await withTimeout(this.redis.get(this.key), this.ttlMs, 'no answer from Redis');
          this.logger.info({ lease: this.key, holder }, 'waiting for the lease held by another process');
          announced = true;
        }
      } catch (err) {
        // A standby must outlive a Redis restart (a connection without an offline queue fails
        // at once while Redis is away): try again.
        if (!unreachable) this.logger.warn({ lease: this.key, err: (err as Error).message }, 'could not ask Redis for the lease; retrying');
        unreachable = true;
      }
      await sleep(Math.max(100, Math.floor(this.ttlMs / 10)), signal);
    }
    this.held = true;
    this.logger.info({ lease: this.key, owner: this.owner }, 'lease acquired');
    const every = Math.max(50, Math.floor(this.ttlMs / 3));
    let due = Date.now() + every;
    this.timer = setInterval(() => {
      // A renewal that runs late means the event loop was held (a long synchronous task, a GC
      // pause, a stopped process): say by how much, before it costs the lease.
      const late = Date.now() - due;
      if (late > Math.max(100, this.ttlMs / 10)) this.logger.warn({ lease: this.key, lateMs: late, ttlMs: this.ttlMs }, 'lease renewal was late: the event loop was blocked or the process paused');
      due = Date.now() + every;
      void this.renew();
    }, every);
    this.timer.unref();
    this.armWatchdog();
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (this.held && Date.now() >= this.validUntil) this.lose('not renewed in time (Redis unreachable, or this process was paused)');
      else if (this.held) this.armWatchdog();
    }, Math.max(10, this.validUntil - Date.now()));
    this.watchdog.unref();
  }

  private async renew(): Promise<void> {
    if (!this.held) return;
    const sentAt = Date.now();
    try {
      const ok = (await runScript(this.redis, RENEW, [this.key], [this.owner, String(this.ttlMs)])) as number;
      if (!this.held) return;
      if (ok !== 1) this.lose('taken over, or expired');
      else {
        this.renewedAt = sentAt;
        this.renewFailing = false;
        this.armWatchdog();
      }
    } catch (err) {
      // Cannot prove we still hold it; the watchdog gives it up when the time runs out. Until
      // then, try again soon rather than at the next period: Redis may be back (a restart, a
      // Sentinel failover) well before, and the lease then outlives outages of up to 2/3 of
      // the TTL minus the time since the last renewal, instead of 1/3.
      if (!this.renewFailing) this.logger.warn({ lease: this.key, err }, 'could not renew the lease; retrying');
      this.renewFailing = true;
      clearTimeout(this.retry);
      this.retry = setTimeout(() => void this.renew(), RENEW_RETRY_MS);
      this.retry.unref();
    }
  }

  private lose(why: string): void {
    if (!this.held) return;
    this.held = false;
    clearInterval(this.timer);
    clearTimeout(this.watchdog);
    clearTimeout(this.retry);
    const err = new LeaseLostError(this.key);
    this.logger.error({ lease: this.key, why }, err.message);
    this.emit('lost', err);
  }

  /**
   * Runs `script` (keys and args after the lease's) only if we still own the lease, atomically
   * in Redis; resolves to its result, or throws LeaseLostError.
   */
  async fenced(script: string, keys: string[], args: (string | Buffer)[]): Promise<unknown> {
    if (!this.isHeld) throw new LeaseLostError(this.key);
    let wrapped = this.wrapped.get(script);
    if (wrapped === undefined) {
      wrapped = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {err='LEASE_LOST'} end\n${script}`;
      this.wrapped.set(script, wrapped);
    }
    try {
      return await runScript(this.redis, wrapped, [this.key, ...keys], [this.owner, ...args]);
    } catch (err) {
      if (/LEASE_LOST/.test(String(err))) {
        this.lose('another process owns it');
        throw new LeaseLostError(this.key);
      }
      throw err;
    }
  }

  /**
   * Runs `script` (written for its own KEYS and ARGV, unaware of the lease) only if we still own
   * the lease, atomically in Redis; throws LeaseLostError otherwise. For writes a stale holder
   * must never make, by scripts that also run unfenced.
   */
  runFenced(script: string, keys: string[], args: (string | Buffer)[]): Promise<unknown> {
    return this.fenced(`table.remove(KEYS, 1)\ntable.remove(ARGV, 1)\n${script}`, keys, args);
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.watchdog);
    clearTimeout(this.retry);
    if (!this.held) return;
    this.held = false;
    try {
      await runScript(this.redis, RELEASE, [this.key], [this.owner]);
    } catch (err) {
      this.logger.warn({ lease: this.key, err }, 'could not release the lease; it will expire by itself');
    }
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
