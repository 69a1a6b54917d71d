/**
 * Redis connections from config. Commands wait (offline queue) while ioredis reconnects by
 * itself, and never give up after a number of retries (BullMQ needs maxRetriesPerRequest null).
 */
import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import type { ConnectionOptions } from 'node:tls';
import type { RedisConfig, RedisTlsConfig } from '../config/schema.js';
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

function tlsOptions(tls: RedisTlsConfig): ConnectionOptions | undefined {
  if (tls === false) return undefined;
  if (tls === true) return {};
  return {
    ...(tls.caFile ? { ca: fs.readFileSync(tls.caFile) } : {}),
    ...(tls.certFile ? { cert: fs.readFileSync(tls.certFile) } : {}),
    ...(tls.keyFile ? { key: fs.readFileSync(tls.keyFile) } : {}),
    ...(tls.servername ? { servername: tls.servername } : {}),
    rejectUnauthorized: tls.rejectUnauthorized,
  };
}

/** `host:port` → ioredis' address form. */
function sentinelAddress(hostPort: string): { host: string; port: number } {
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
}

/** Where the config says Redis is, for messages: `at host:port`, or the sentinels and the group name. */
export function describeRedis(cfg: RedisConfig): string {
  return cfg.sentinel ? `the primary of '${cfg.sentinel.name}' through the sentinels ${cfg.sentinel.nodes.join(', ')}` : `at ${cfg.host}:${cfg.port}`;
}

/** Reconnect backoff: 100 ms doubling to 1 s (with Sentinel, each attempt asks the sentinels again, so a promoted replica is found within a second). */
const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000);

export function redisOptions(cfg: RedisConfig): RedisOptions {
  const tls = tlsOptions(cfg.tls);
  const common: RedisOptions = {
    db: cfg.db,
    ...(cfg.username ? { username: cfg.username } : {}),
    ...(cfg.password ? { password: cfg.password } : {}),
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy,
    // A primary that was demoted (a failover while it stayed up: a network partition) answers
    // writes with READONLY: reconnect, which asks the sentinels for the new primary. The command
    // itself fails (never re-sent), as any command caught in a reconnect may.
    reconnectOnError: (err) => err.message.startsWith('READONLY'),
  };
  if (!cfg.sentinel) return { ...common, host: cfg.host, port: cfg.port, ...(tls ? { tls } : {}) };
  const s = cfg.sentinel;
  const sentinelTls = tlsOptions(s.tls);
  return {
    ...common,
    sentinels: s.nodes.map(sentinelAddress),
    name: s.name,
    role: 'master',
    ...(s.username ? { sentinelUsername: s.username } : {}),
    ...(s.password ? { sentinelPassword: s.password } : {}),
    ...(sentinelTls ? { sentinelTLS: sentinelTls } : {}),
    // In sentinel mode ioredis uses `tls` for the servers only with this flag.
    ...(tls ? { tls, enableTLSForSentinelMode: true } : {}),
    // Every sentinel unreachable: keep asking, as for a Redis that is down.
    sentinelRetryStrategy: retryStrategy,
  };
}

/**
 * `failFast` is for commands a person waits on (status, flush): a few quick retries, then an
 * error, instead of waiting for Redis forever as the daemons do. With Sentinel, sentinels that
 * do not answer fail as fast, but a primary they name that does not answer is retried for up to
 * 30 s, with commands waiting meanwhile: that is a failover under way (the sentinels name the
 * old primary until they have promoted a replica), and the command then goes on with the new one.
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
  const giveUpAfter = (attempts: number) => (times: number) => (times > attempts ? null : 200);
  const redis = new Redis({
    ...base,
    connectTimeout: 3_000,
    ...(cfg.sentinel
      ? { maxRetriesPerRequest: null, retryStrategy: giveUpAfter(FAILOVER_WAIT_MS / 200), sentinelRetryStrategy: giveUpAfter(3) }
      : { maxRetriesPerRequest: 2, retryStrategy: giveUpAfter(3) }),
  });
  // The failure surfaces as the command's error (see withRedis); no "unhandled error" noise.
  redis.on('error', (err) => ((redis as Redis & { lastError?: Error }).lastError = err));
  return redis;
}

/** How long a command-line tool waits for a failover (more than one takes with down-after-milliseconds 5000). */
const FAILOVER_WAIT_MS = 30_000;

/** Runs `fn` with a fail-fast connection; an unreachable Redis becomes one clear error. */
export async function withRedis<T>(cfg: RedisConfig, name: string, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = connectRedis(cfg, name, { failFast: true });
  try {
    return await fn(redis);
  } catch (err) {
    const last = (redis as Redis & { lastError?: Error }).lastError;
    if (last && redis.status !== 'ready') {
      throw new McreplError('REDIS_UNAVAILABLE', `cannot reach Redis ${describeRedis(cfg)}: ${last.message}`, { retriable: true, cause: err });
    }
    throw err;
  } finally {
    redis.disconnect();
  }
}

/** The server a connection is talking to now, as `host:port` (with Sentinel: the primary it was sent to). */
export function connectedTo(redis: Redis): string | undefined {
  const s = (redis as Redis & { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  return s?.remoteAddress && s.remotePort ? `${s.remoteAddress}:${s.remotePort}` : undefined;
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
 * Notices that Redis itself restarted, or that another server answers now (a Sentinel
 * failover promoted a replica): its run_id changed across a reconnect. With AOF and
 * `appendfsync everysec`, a Redis *process* crash loses nothing it acknowledged, but a machine
 * crash can lose the last second, and a promoted replica lacks what the old primary had not
 * yet sent it (replication is asynchronous): whoever keeps state in memory that depends on Redis
 * having kept its writes (the tailer's position, a worker's view of what was applied and of
 * what a down server missed) must re-read it. `settled()` resolves once the current connection
 * is known to be to the same Redis (or the change was reported).
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
      const server = connectedTo(this.redis);
      if (id && this.runId && id !== this.runId) {
        this.logger.warn({ was: this.runId, now: id, server }, 'Redis restarted or failed over (another run_id answers): re-reading the state kept there');
        const was = this.runId;
        this.runId = id;
        this.emit('restarted', was, id);
      } else if (id) {
        if (!this.runId) this.logger.debug({ runId: id, server }, 'connected to Redis');
        this.runId = id;
      }
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
