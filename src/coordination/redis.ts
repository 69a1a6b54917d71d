/**
 * Redis connections from config. Commands wait (offline queue) while ioredis reconnects by
 * itself, and never give up after a number of retries (BullMQ needs maxRetriesPerRequest null).
 */
import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import type { RedisConfig } from '../config/schema.js';
import { McreplError } from '../errors.js';

const shas = new Map<string, string>();

/**
 * Runs a Lua script by its SHA1 (EVALSHA), sending its text (EVAL) only when Redis does not have
 * it cached yet (after a restart or SCRIPT FLUSH). A script run on every job would otherwise
 * travel and be hashed by Redis on every call.
 */
export async function runScript(redis: Redis, lua: string, keys: readonly string[], args: readonly (string | Buffer)[]): Promise<unknown> {
  let sha = shas.get(lua);
  if (sha === undefined) {
    sha = createHash('sha1').update(lua).digest('hex');
    shas.set(lua, sha);
  }
  try {
    return await redis.evalsha(sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
    return await redis.eval(lua, keys.length, ...keys, ...args);
  }
}

export function redisOptions(cfg: RedisConfig): RedisOptions {
  return {
    host: cfg.host,
    port: cfg.port,
    db: cfg.db,
    ...(cfg.username ? { username: cfg.username } : {}),
    ...(cfg.password ? { password: cfg.password } : {}),
    ...(cfg.tls === true ? { tls: {} } : {}),
    ...(typeof cfg.tls === 'object'
      ? {
          tls: {
            ...(cfg.tls.caFile ? { ca: fs.readFileSync(cfg.tls.caFile) } : {}),
            ...(cfg.tls.certFile ? { cert: fs.readFileSync(cfg.tls.certFile) } : {}),
            ...(cfg.tls.keyFile ? { key: fs.readFileSync(cfg.tls.keyFile) } : {}),
            ...(cfg.tls.servername ? { servername: cfg.tls.servername } : {}),
            rejectUnauthorized: cfg.tls.rejectUnauthorized,
          },
        }
      : {}),
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
  };
}

/**
 * `failFast` is for commands a person waits on (status, flush): a few quick retries, then an
 * error, instead of waiting for Redis forever as the daemons do.
 */
export function connectRedis(cfg: RedisConfig, name: string, opts: { failFast?: boolean; strictOrder?: boolean } = {}): Redis {
  const base: RedisOptions = {
    ...redisOptions(cfg),
    connectionName: `mcrepl:${name}`,
    // strictOrder: nothing queued while disconnected, nothing re-sent after a reconnect, so no
    // write can reach a restarted Redis before the restart was noticed (RedisRestartDetector).
    ...(opts.strictOrder ? { enableOfflineQueue: false, autoResendUnfulfilledCommands: false } : {}),
  };
  if (!opts.failFast) return new Redis(base);
  const redis = new Redis({
    ...base,
    maxRetriesPerRequest: 2,
    connectTimeout: 3_000,
    retryStrategy: (times) => (times > 3 ? null : 200),
  });
  // The failure surfaces as the command's error (see withRedis); no "unhandled error" noise.
  redis.on('error', (err) => ((redis as Redis & { lastError?: Error }).lastError = err));
  return redis;
}

/** Runs `fn` with a fail-fast connection; an unreachable Redis becomes one clear error. */
export async function withRedis<T>(cfg: RedisConfig, name: string, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = connectRedis(cfg, name, { failFast: true });
  try {
    return await fn(redis);
  } catch (err) {
    const last = (redis as Redis & { lastError?: Error }).lastError;
    if (last && redis.status !== 'ready') {
      throw new McreplError('REDIS_UNAVAILABLE', `cannot reach Redis at ${cfg.host}:${cfg.port}: ${last.message}`, { retriable: true, cause: err });
    }
    throw err;
  } finally {
    redis.disconnect();
  }
}

/** Resolves once the connection is ready (needed when the offline queue is off). */
export async function redisReady(redis: Redis, signal?: AbortSignal): Promise<void> {
  while (redis.status !== 'ready') {
    signal?.throwIfAborted();
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 200);
      redis.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/**
 * Notices that Redis itself restarted (its run_id changed across a reconnect). With AOF and
 * `appendfsync everysec`, a Redis *process* crash loses nothing it acknowledged, but a machine
 * crash can lose the last second: whoever keeps state in memory that depends on Redis having
 * kept its writes (the tailer's position, a worker's view of what a down server missed) must
 * re-read it. `settled()` resolves once the current connection is known to be to the same Redis
 * (or the restart was reported).
 */
export class RedisRestartDetector extends EventEmitter<{ restarted: [string, string] }> {
  private runId: string | undefined;
  private gate: Promise<void> = Promise.resolve();
  private open: (() => void) | undefined;

  constructor(private readonly redis: Redis, private readonly logger: Logger) {
    super();
    redis.on('close', () => {
      if (!this.open) this.gate = new Promise((r) => (this.open = r));
    });
    redis.on('ready', () => void this.check());
    if (redis.status === 'ready') void this.check();
  }

  private async check(): Promise<void> {
    try {
      const info = await this.redis.info('server');
      const id = /run_id:(\w+)/.exec(info)?.[1];
      if (id && this.runId && id !== this.runId) {
        this.logger.warn({ was: this.runId, now: id }, 'Redis restarted: re-reading the state kept there');
        const was = this.runId;
        this.runId = id;
        this.emit('restarted', was, id);
      } else if (id) this.runId = id;
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not check whether Redis restarted');
      return; // the next 'ready' tries again; writes stay held
    }
    this.open?.();
    this.open = undefined;
  }

  /** Resolves when no reconnect is waiting to be checked. */
  settled(): Promise<void> {
    return this.gate;
  }
}
