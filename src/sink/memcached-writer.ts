/**
 * Writing to one memcached server. `MemcachedWriter` is the seam: the workers only need
 * "apply these ops to this server and tell me, per op, whether it worked, and if not whether
 * trying again can help". Two implementations: `MetaWriter` (meta-client.ts: the text
 * protocol's meta commands, pipelined; the default) and `MemjsWriter` (memjs, binary protocol;
 * the one that works with SASL). `memcached.writer` in the config picks one.
 *
 * The ops handed to one write() call must concern distinct keys (the worker coalesces a job
 * per key first), so their completion order does not matter and any subset can be retried.
 */
import memjs from 'memjs';
import { MEMCACHED_RELATIVE_EXPIRY_MAX, type DeleteOp, type SetOp } from '../fanout/op.js';
import type { Logger } from '../observability/logger.js';

export type WriteOp =
  | { kind: 'set'; key: Buffer; value: Buffer; /** memcached exptime: 0, relative seconds, or unix time */ exptime: number }
  | { kind: 'delete'; key: Buffer };

/** The request to send for an op at time `nowSec`. */
export function toWrite(op: SetOp | DeleteOp, nowSec: number): WriteOp {
  if (op.kind === 'delete') return { kind: 'delete', key: op.key };
  if (op.expiresAt === 0) return { kind: 'set', key: op.key, value: op.value, exptime: 0 };
  const remaining = op.expiresAt - nowSec;
  if (remaining <= 0) return { kind: 'delete', key: op.key };
  // Relative when it fits (immune to a skewed memcached clock), absolute otherwise.
  return { kind: 'set', key: op.key, value: op.value, exptime: remaining <= MEMCACHED_RELATIVE_EXPIRY_MAX ? Math.ceil(remaining) : op.expiresAt };
}

export interface Refusal {
  op: SetOp | DeleteOp;
  server: string;
  reason: string;
  /** A refused set is replaced by a delete of the key on that server. */
  keyDeleted: boolean;
}

/**
 * Called right before bytes are handed to the socket; throws to stop them (a worker group that
 * lost, or may have lost, its lease: `Lease.check`).
 */
export type Fence = () => void;

export type WriteOutcome = { ok: true } | { ok: false; retriable: boolean; error: string };

/** Who the server process is: a different pid or start time means it restarted (empty). */
export interface ServerIdentity {
  pid: number;
  /** Unix seconds when the process started (`time - uptime`, ±1 s). */
  startedAt: number;
}

export interface MemcachedWriter {
  /** host:port */
  readonly address: string;
  write(ops: readonly WriteOp[]): Promise<WriteOutcome[]>;
  /** Asks the server who it is; rejects if it does not answer. */
  identity(): Promise<ServerIdentity>;
  /** Invalidates every item on the server (`flush_all`). */
  flushAll(): Promise<void>;
  /**
   * True once nothing this writer sent before can still be processed by the server (so a replay
   * cannot be overtaken by an older write). Writers that cannot tell leave it out, and the
   * worker waits `worker.settleMs` instead.
   */
  drained?(): Promise<boolean>;
  /** The server restarted: nothing sent to its previous process can land any more. */
  forgetUnconfirmed?(): void;
  close(): Promise<void>;
}

export interface WriterOptions {
  timeoutMs: number;
  connectTimeoutMs: number;
  logger: Logger;
  /** SASL PLAIN credentials (binary protocol), for servers started with -S. */
  username?: string | undefined;
  password?: string | undefined;
  /** Checked right before requests are handed to the socket (the worker group's lease). */
  fence?: Fence | undefined;
}

export type WriterFactory = (address: string, opts: WriterOptions) => MemcachedWriter;

/** Replies memcached gives for requests that can never succeed as they are. */
const PERMANENT = /Value too large|Invalid arguments|Incr\/Decr on non-numeric value|Unknown command/i;

/**
 * memjs leaves a request unanswered forever when the server closes the connection under it
 * (kill -9: its socket 'close' handler drops the socket but neither fails nor re-sends what was
 * in flight), and its per-request timeout only fires after the connection has been idle that
 * long, which a busy connection never is. So every call here has a deadline of its own; past
 * it the connection is reset, which fails everything still pending on it (retriable).
 */
interface MemjsServerInternals {
  error(err: Error): void;
}

/**
 * Requests in flight per server at a time. memjs keeps a timer and a callback per request: a
 * whole job (thousands of ops) at once made a worker's heap and GC pauses grow until it missed
 * its lease renewals during a drain.
 */
const MEMJS_WINDOW = 500;

export class MemjsWriter implements MemcachedWriter {
  private readonly client: memjs.Client;
  private readonly timeoutMs: number;
  private readonly fence: Fence | undefined;

  constructor(
    readonly address: string,
    opts: WriterOptions,
  ) {
    this.timeoutMs = opts.timeoutMs;
    this.fence = opts.fence;
    this.client = memjs.Client.create(address, {
      // One attempt per request: retrying (and its order) is the worker's business.
      retries: 1,
      timeout: opts.timeoutMs / 1000,
      conntimeout: opts.connectTimeoutMs / 1000,
      keepAlive: true,
      ...(opts.username !== undefined ? { username: opts.username, password: opts.password ?? '' } : {}),
      // memjs prints failures to the console unless given a logger.
      logger: { log: (...args: unknown[]) => opts.logger.debug({ server: address, memjs: args.map(String).join(' ') }, 'memjs') },
    });
  }

  async write(ops: readonly WriteOp[]): Promise<WriteOutcome[]> {
    if (ops.length <= MEMJS_WINDOW) return this.writeWindow(ops);
    const out: WriteOutcome[] = [];
    for (let i = 0; i < ops.length; i += MEMJS_WINDOW) out.push(...(await this.writeWindow(ops.slice(i, i + MEMJS_WINDOW))));
    return out;
  }

  private async writeWindow(ops: readonly WriteOp[]): Promise<WriteOutcome[]> {
    // memjs queues requests itself, so the lease is checked per window of requests, not per
    // socket write as the meta writer does (docs/decisions/0020).
    this.fence?.();
    // The window's requests go out at once on the server's connection (pipelined); replies
    // come back in order.
    const pending = ops.map((op) =>
      op.kind === 'set' ? this.client.set(op.key as unknown as string, op.value, { expires: op.exptime }) : this.client.delete(op.key as unknown as string),
    );
    // Pipelined requests are answered in order: allow the timeout plus time for the batch itself.
    const settled = await this.withDeadline(Promise.allSettled(pending), this.timeoutMs * 2 + Math.ceil(ops.length / 10), `${ops.length} requests`);
    return settled.map((s): WriteOutcome => {
      if (s.status === 'fulfilled') return { ok: true }; // delete of a missing key resolves false: also fine
      const error = s.reason instanceof Error ? s.reason.message : String(s.reason);
      return { ok: false, retriable: !PERMANENT.test(error), error };
    });
  }

  identity(): Promise<ServerIdentity> {
    return this.withDeadline(this.stats(), this.timeoutMs * 2, 'stats');
  }

  /**
   * Resolves or rejects with `p`; if `p` is still pending after `ms`, resets the connection,
   * which makes memjs fail every request pending on it, `p`'s included.
   */
  private async withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    const timer = setTimeout(() => {
      const err = new Error(`${this.address}: no reply to ${what} within ${ms} ms (connection reset)`);
      for (const server of (this.client as unknown as { servers: MemjsServerInternals[] }).servers) server.error(err);
    }, ms);
    try {
      return await p;
    } finally {
      clearTimeout(timer);
    }
  }

  private stats(): Promise<ServerIdentity> {
    return new Promise((resolve, reject) => {
      this.client.stats((err, _server, stats) => {
        if (err || !stats) return reject(err ?? new Error(`${this.address}: no stats`));
        const pid = Number(stats.pid);
        const startedAt = Number(stats.time) - Number(stats.uptime);
        if (!Number.isFinite(pid) || !Number.isFinite(startedAt)) return reject(new Error(`${this.address}: stats without pid/uptime`));
        resolve({ pid, startedAt });
      });
    });
  }

  async flushAll(): Promise<void> {
    const results = (await this.withDeadline(this.client.flush(), this.timeoutMs * 2, 'flush_all')) as Record<string, boolean | Error>;
    const r = Object.values(results)[0];
    if (r !== true) throw r instanceof Error ? r : new Error(`${this.address}: flush_all failed`);
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
