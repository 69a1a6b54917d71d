/**
 * memcached's text protocol, pipelined, with the meta commands (memcached ≥ 1.6):
 *
 * - `MetaWriter`, the default `MemcachedWriter`: a whole batch of `ms`/`md` requests goes out
 *   in one socket write and their replies are read in order as they stream back. On this
 *   machine it sets ~5× faster than memjs (see docs/BENCHMARKS.md) and it needs no workaround
 *   for lost replies: a connection that makes no progress for `timeoutMs` is closed and
 *   everything pending on it fails (retriable).
 * - `MetaClient`: what the binary protocol cannot do, used to warm a server that came back
 *   empty from a healthy peer: list a server's keys (`lru_crawler metadump`), read a value with
 *   its remaining TTL (`mg <key> v t`), and copy it (`ms <key> <n> T<ttl>`).
 *
 * memcached turns the text protocol off under SASL (-S); such servers need the memjs writer.
 */
import net from 'node:net';
import type { Fence, MemcachedWriter, ServerIdentity, WriteOp, WriteOutcome } from './memcached-writer.js';

export type { Fence } from './memcached-writer.js';

/**
 * Something waiting for replies. `read` consumes as many complete replies as `buf` holds from
 * `at` and returns where it stopped; it sets `done` after its last one. It throws if the stream
 * makes no sense any more (the connection is then closed and every pending request fails).
 */
interface Pending {
  done: boolean;
  read(buf: Buffer, at: number): number;
  fail(err: Error): void;
}

const LF = 0x0a;

/** The reply line starting at `at` (without CRLF) and the offset after it; undefined if incomplete. */
function lineAt(buf: Buffer, at: number): { line: string; next: number } | undefined {
  const eol = buf.indexOf(LF, at);
  if (eol < 0) return undefined;
  const end = eol > at && buf[eol - 1] === 0x0d ? eol - 1 : eol;
  return { line: buf.toString('latin1', at, end), next: eol + 1 };
}

/**
 * A run of requests, one reply each, read by `one`; resolves with every reply's value, in order.
 * If the connection fails first, it rejects, or, given `failed`, resolves with `failed(err)` for
 * every request still without a reply.
 */
class Batch<T> implements Pending {
  /** Every reply has been read (what the connection needs to stay in step). */
  done: boolean;
  private readonly values: T[] = [];
  /** The caller has its answer (all replies, or the failure). */
  private settled = false;

  constructor(
    private readonly count: number,
    private readonly one: (buf: Buffer, at: number) => { value: T; next: number } | undefined,
    private readonly resolve: (v: T[]) => void,
    private readonly reject: (e: Error) => void,
    private readonly failed?: (err: Error) => T,
    /** The value of an `HD` or `NF` reply, read here without a call to `one` (writes). */
    private readonly stored?: T,
  ) {
    this.done = count === 0;
  }

  read(buf: Buffer, at: number): number {
    const stored = this.stored;
    while (this.values.length < this.count) {
      if (stored !== undefined && isStoredReply(buf, at)) {
        this.values.push(stored);
        at += 4;
        continue;
      }
      let r;
      try {
        r = this.one(buf, at);
      } catch (err) {
        // The reply is known, but what follows it may not line up: keep it, then fail the rest.
        if (err instanceof ReplyOutOfStep) this.values.push(err.value as T);
        throw err;
      }
      if (!r) return at;
      this.values.push(r.value);
      at = r.next;
    }
    this.done = true;
    if (!this.settled) {
      this.settled = true;
      this.resolve(this.values);
    }
    return at;
  }

  /**
   * Answers the caller with the failure (or `failed(err)` for each request without a reply). The
   * replies may still be read afterwards (a stalled connection stays open): they are dropped.
   */
  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    if (!this.failed) return this.reject(err);
    const value = this.failed(err);
    const out = this.values.slice();
    while (out.length < this.count) out.push(value);
    this.resolve(out);
  }
}

/** A reply that put the stream out of step, with the value of the request it answered. */
class ReplyOutOfStep extends Error {
  constructor(
    message: string,
    readonly value: unknown,
  ) {
    super(message);
  }
}

/**
 * Request bytes sent and not yet answered, per connection. A request goes out only while the
 * window has room (or nothing is in flight), so what the process hands the kernel fits in the
 * socket's send buffer at once: no byte of ours waits in Node's own write queue, where it would
 * go out by itself after a pause of the process (SIGSTOP, a VM stall) with no lease check in
 * front of it (docs/decisions/0020). It starts at the kernel's initial send buffer (16 KiB,
 * `net.ipv4.tcp_wmem`), grows while every write is taken whole (the kernel grows the buffer of
 * a busy connection), and falls back to the start as soon as one is not.
 */
export const WINDOW_BYTES = 16 * 1024;
const WINDOW_MAX_BYTES = 256 * 1024;
/** Writes taken whole in a row before the window doubles. */
const WINDOW_GROW_AFTER = 32;


interface Outgoing {
  cmd: Buffer;
  pending: Pending;
}

interface InFlight {
  pending: Pending;
  bytes: number;
  /** Its caller was told it failed (stall): its replies are still read, then dropped. */
  abandoned: boolean;
}

/**
 * One pipelined text-protocol connection; connects on first use and again after the server
 * closed it.
 *
 * memcached answers a connection's requests in order, one after the other. So a connection
 * whose server stops answering (paused, overloaded) is not closed: its callers are told their
 * requests failed (retriable), but the requests stay in flight, their replies are read and
 * dropped when they come, and whatever is sent on it later is answered only after them. A
 * reply on this connection therefore proves that everything sent before it was processed: no
 * request of ours can land after a later one (see ServerChannel's recovery). A connection that
 * closes with requests still unanswered is remembered (`unconfirmed`) until the server shows it
 * no longer holds it (`drained`).
 */
export class MetaConnection {
  private socket: net.Socket | undefined;
  /** The open socket's local port (the server lists the connection under it). */
  private socketPort: number | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private rest: Buffer = Buffer.alloc(0);
  /** Sent, waiting for replies, in order. */
  private readonly inFlight: InFlight[] = [];
  private inFlightBytes = 0;
  private window = WINDOW_BYTES;
  private wholeWrites = 0;
  private awaitingDrain = false;
  /** Not sent yet (the window is full, or the connection is being opened). */
  private readonly outbox: Outgoing[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Local ports of connections that closed with requests unanswered: the server may still hold them. */
  private readonly unconfirmed = new Set<number>();

  constructor(
    readonly address: string,
    private readonly timeoutMs: number,
    private readonly connectTimeoutMs = timeoutMs,
    private readonly fence?: Fence,
  ) {}

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    const attempt: Promise<net.Socket> = new Promise<net.Socket>((resolve, reject) => {
      const i = this.address.lastIndexOf(':');
      const s = net.connect({ host: this.address.slice(0, i), port: Number(this.address.slice(i + 1)) });
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
      let open = false;
      const t = setTimeout(() => s.destroy(new Error(`${this.address}: connect timed out after ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
      s.once('connect', () => {
        open = true;
        clearTimeout(t);
        this.socket = s;
        // Kept now: once the socket is closed Node no longer knows it, and `drained` needs it.
        this.socketPort = s.localPort;
        if (this.connecting === attempt) this.connecting = undefined;
        resolve(s);
      });
      s.on('data', (d: Buffer) => {
        if (this.socket === s) this.onData(d);
      });
      // Each socket answers only for itself: a late 'close' of an old one must not touch a newer.
      const gone = (err: Error) => {
        clearTimeout(t);
        if (!open) {
          if (this.connecting === attempt) this.connecting = undefined;
          reject(err);
        } else if (this.socket === s) {
          this.close(err);
        }
      };
      s.on('error', gone);
      s.on('close', () => gone(new Error(`${this.address}: connection closed`)));
    });
    this.connecting = attempt;
    return attempt;
  }

  private onData(d: Buffer): void {
    const buf = this.rest.length === 0 ? d : Buffer.concat([this.rest, d]);
    let at = 0;
    try {
      while (this.inFlight.length > 0) {
        const f = this.inFlight[0]!;
        at = f.pending.read(buf, at);
        if (!f.pending.done) break;
        this.inFlight.shift();
        this.inFlightBytes -= f.bytes;
      }
    } catch (err) {
      this.close(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (this.inFlight.length === 0 && at < buf.length) {
      this.close(new Error(`${this.address}: unexpected reply: ${JSON.stringify(buf.toString('latin1', at, Math.min(buf.length, at + 80)))}`));
      return;
    }
    // Copy what is left: a subarray would pin the whole chunk it came from.
    this.rest = at >= buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(at));
    this.armTimer();
    this.pump();
  }

  /** While replies are due, the server must make progress within timeoutMs. */
  private armTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight.length > 0 || this.outbox.length > 0) {
      this.timer = setTimeout(() => this.stall(new Error(`${this.address}: no reply within ${this.timeoutMs} ms`)), this.timeoutMs);
    }
  }

  /**
   * The server makes no progress: every caller is told its requests failed (retriable), but the
   * connection stays open, its unanswered requests in flight (see the class comment).
   */
  private stall(err: Error): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const f of this.inFlight) {
      if (!f.abandoned) {
        f.abandoned = true;
        f.pending.fail(err);
      }
    }
    for (const o of this.outbox.splice(0)) o.pending.fail(err);
    if (this.inFlight.length > 0) this.armTimer();
  }

  /**
   * Closes the connection (or it is gone: the server closed it, a reply made no sense) and fails
   * everything pending on it.
   */
  close(err: Error = new Error(`${this.address}: closed`)): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const s = this.socket;
    this.socket = undefined;
    this.awaitingDrain = false;
    if (s && this.inFlight.length > 0 && this.socketPort !== undefined) this.unconfirmed.add(this.socketPort);
    this.socketPort = undefined;
    s?.destroy();
    this.rest = Buffer.alloc(0);
    this.inFlightBytes = 0;
    for (const f of this.inFlight.splice(0)) if (!f.abandoned) f.pending.fail(err);
    for (const o of this.outbox.splice(0)) o.pending.fail(err);
  }

  /** Sends `cmd` and waits for its replies, read by `pending`. */
  async send(cmd: Buffer, pending: Pending): Promise<void> {
    if (pending.done) return;
    this.outbox.push({ cmd, pending });
    try {
      await this.connect();
    } catch (err) {
      const i = this.outbox.findIndex((o) => o.pending === pending);
      if (i >= 0) this.outbox.splice(i, 1);
      pending.fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.pump();
  }

  /** Sends what the window allows, each request after the fence let it through. */
  private pump(): void {
    const s = this.socket;
    if (!s || s.destroyed) return;
    while (this.outbox.length > 0) {
      const next = this.outbox[0]!;
      if (this.inFlight.length > 0 && this.inFlightBytes + next.cmd.length > this.window) break;
      // Bytes still in Node's queue: nothing more until they are in the kernel.
      if (s.writableLength > 0) {
        if (!this.awaitingDrain) {
          this.awaitingDrain = true;
          s.once('drain', () => {
            this.awaitingDrain = false;
            this.pump();
          });
        }
        break;
      }
      this.outbox.shift();
      try {
        this.fence?.();
      } catch (err) {
        next.pending.fail(err instanceof Error ? err : new Error(String(err)));
        for (const o of this.outbox.splice(0)) o.pending.fail(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.inFlight.push({ pending: next.pending, bytes: next.cmd.length, abandoned: false });
      this.inFlightBytes += next.cmd.length;
      if (this.inFlight.length === 1) this.armTimer();
      s.write(next.cmd);
      if (s.writableLength > 0) {
        this.window = WINDOW_BYTES;
        this.wholeWrites = 0;
      } else if (++this.wholeWrites >= WINDOW_GROW_AFTER && this.window < WINDOW_MAX_BYTES) {
        this.window *= 2;
        this.wholeWrites = 0;
      }
    }
  }

  /**
   * True once no request this process sent to the server can still be processed by it: every
   * connection that closed with requests unanswered is gone from the server's own list of
   * connections (`stats conns`). Requests on the open connection need no check: anything sent
   * after them is answered after them.
   */
  async drained(): Promise<boolean> {
    if (this.unconfirmed.size === 0) return true;
    const [lines] = await this.batch(Buffer.from('stats conns\r\n'), 1, statsReply);
    const open = new Set<number>();
    for (const [name, value] of lines!) {
      const m = /:addr$/.test(name) ? /:(\d+)$/.exec(value) : null;
      if (m) open.add(Number(m[1]));
    }
    for (const port of this.unconfirmed) if (!open.has(port) || port === this.socketPort) this.unconfirmed.delete(port);
    return this.unconfirmed.size === 0;
  }

  /** How many request bytes may go out as one piece now (the window). */
  get windowBytes(): number {
    return this.window;
  }

  /** The server restarted: nothing of its old process can be processed any more. */
  forgetUnconfirmed(): void {
    this.unconfirmed.clear();
  }

  /** `count` requests in `cmd`, one reply each, read by `one`. */
  batch<T>(cmd: Buffer, count: number, one: (buf: Buffer, at: number) => { value: T; next: number } | undefined, failed?: (err: Error) => T, stored?: T): Promise<T[]> {
    // Nothing to send, nothing to wait for (a Batch of none is done at once and never answered).
    if (count === 0) return Promise.resolve([]);
    return new Promise<T[]>((resolve, reject) => {
      void this.send(cmd, new Batch(count, one, resolve, reject, failed, stored));
    });
  }
}

/** Replies memcached gives for requests that can never succeed as they are. */
const PERMANENT_REPLY = /^(SERVER_ERROR object too large|CLIENT_ERROR)/;

/** Encodes a batch of writes as meta commands, in one buffer. */
export function encodeWrites(ops: readonly WriteOp[]): Buffer {
  let size = 0;
  const heads: string[] = new Array<string>(ops.length);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    // `ms <key> <datalen> T<exptime>` / `md <key>`; the key's bytes go in between.
    const head = op.kind === 'set' ? ` ${op.value.length} T${op.exptime}\r\n` : '\r\n';
    heads[i] = head;
    size += 3 + op.key.length + head.length + (op.kind === 'set' ? op.value.length + 2 : 0);
  }
  const buf = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    o += buf.write(op.kind === 'set' ? 'ms ' : 'md ', o, 'latin1');
    o += op.key.copy(buf, o);
    o += buf.write(heads[i]!, o, 'latin1');
    if (op.kind === 'set') {
      o += op.value.copy(buf, o);
      buf[o++] = 0x0d;
      buf[o++] = 0x0a;
    }
  }
  return buf;
}

/** "HD\r\n" (stored / deleted) or "NF\r\n" (delete of a missing key: fine too) at `at`. */
function isStoredReply(buf: Buffer, at: number): boolean {
  if (buf.length < at + 4 || buf[at + 2] !== 0x0d || buf[at + 3] !== 0x0a) return false;
  const a = buf[at]!;
  const b = buf[at + 1]!;
  return (a === 0x48 && b === 0x44) || (a === 0x4e && b === 0x46);
}

/** Reads one reply to an `ms` or `md` (other than a plain HD or NF). */
function writeReply(address: string): (buf: Buffer, at: number) => { value: WriteOutcome; next: number } | undefined {
  return (buf, at) => {
    // "HD" and "NF" as a whole 4-byte reply are read by the batch itself (isStoredReply).
    const l = lineAt(buf, at);
    if (!l) return undefined;
    if (l.line === 'HD' || l.line === 'NF') return { value: OK, next: l.next };
    if (l.line === 'ERROR' || l.line.startsWith('CLIENT_ERROR')) {
      // The server did not understand a request: what follows may no longer line up with the
      // requests sent. The connection is closed, so the rest of the batch fails (retriable).
      throw new ReplyOutOfStep(`${address}: ${l.line}`, { ok: false, retriable: false, error: `${address}: ${l.line}` });
    }
    return { value: { ok: false, retriable: !PERMANENT_REPLY.test(l.line), error: `${address}: ${l.line}` }, next: l.next };
  };
}

const OK: WriteOutcome = { ok: true };

export class MetaWriter implements MemcachedWriter {
  private readonly conn: MetaConnection;
  private readonly reply: ReturnType<typeof writeReply>;

  constructor(
    readonly address: string,
    private readonly opts: { timeoutMs: number; connectTimeoutMs: number; fence?: Fence | undefined },
  ) {
    this.conn = new MetaConnection(address, opts.timeoutMs, opts.connectTimeoutMs, opts.fence);
    this.reply = writeReply(address);
  }

  drained(): Promise<boolean> {
    return this.conn.drained();
  }

  forgetUnconfirmed(): void {
    this.conn.forgetUnconfirmed();
  }

  async write(ops: readonly WriteOp[]): Promise<WriteOutcome[]> {
    if (ops.length === 0) return [];
    const parts: Promise<WriteOutcome[]>[] = [];
    const maxPart = this.conn.windowBytes;
    let from = 0;
    let bytes = 0;
    for (let i = 0; i <= ops.length; i++) {
      const size = i < ops.length ? writeSize(ops[i]!) : 0;
      if (i === ops.length || (bytes > 0 && bytes + size > maxPart)) {
        const slice = from === 0 && i === ops.length ? ops : ops.slice(from, i);
        // What gets no reply failed with the connection: worth retrying.
        parts.push(this.conn.batch(encodeWrites(slice), slice.length, this.reply, (err) => ({ ok: false, retriable: true, error: err.message }), OK));
        from = i;
        bytes = 0;
      }
      bytes += size;
    }
    return parts.length === 1 ? await parts[0]! : (await Promise.all(parts)).flat();
  }

  async identity(): Promise<ServerIdentity> {
    const [stats] = await this.conn.batch(Buffer.from('stats\r\n'), 1, statsReply);
    const pid = Number(stats!.get('pid'));
    const startedAt = Number(stats!.get('time')) - Number(stats!.get('uptime'));
    if (!Number.isFinite(pid) || !Number.isFinite(startedAt)) throw new Error(`${this.address}: stats without pid/uptime`);
    return { pid, startedAt };
  }

  async flushAll(): Promise<void> {
    const [line] = await this.conn.batch(Buffer.from('flush_all\r\n'), 1, (buf, at) => {
      const l = lineAt(buf, at);
      return l && { value: l.line, next: l.next };
    });
    if (line !== 'OK') throw new Error(`${this.address}: flush_all failed: ${line}`);
  }

  async close(): Promise<void> {
    this.conn.close();
  }
}

function writeSize(op: WriteOp): number {
  return 24 + op.key.length + (op.kind === 'set' ? op.value.length : 0);
}

/** `STAT <name> <value>` lines up to `END`. */
function statsReply(buf: Buffer, at: number): { value: Map<string, string>; next: number } | undefined {
  const stats = new Map<string, string>();
  for (;;) {
    const l = lineAt(buf, at);
    if (!l) return undefined;
    at = l.next;
    if (l.line === 'END') return { value: stats, next: at };
    const m = /^STAT (\S+) (.*)$/.exec(l.line);
    if (!m) throw new Error(`unexpected reply to stats: ${l.line}`);
    stats.set(m[1]!, m[2]!);
  }
}

/** `mg <key> v t` reply: the value and its remaining TTL, or null if missing. */
function getWithTtlReply(address: string) {
  return (b: Buffer, at: number): { value: { value: Buffer; ttl: number } | null; next: number } | undefined => {
    const l = lineAt(b, at);
    if (!l) return undefined;
    if (l.line === 'EN') return { value: null, next: l.next };
    const m = /^VA (\d+)(.*)$/.exec(l.line);
    if (!m) throw new Error(`${address}: unexpected reply to mg: ${l.line}`);
    const len = Number(m[1]);
    if (b.length < l.next + len + 2) return undefined;
    const ttl = /\bt(-?\d+)/.exec(m[2]!);
    return { value: { value: Buffer.from(b.subarray(l.next, l.next + len)), ttl: ttl ? Number(ttl[1]) : -1 }, next: l.next + len + 2 };
  };
}

export class MetaClient {
  private readonly conn: MetaConnection;

  constructor(
    readonly address: string,
    timeoutMs: number,
    fence?: Fence,
  ) {
    this.conn = new MetaConnection(address, timeoutMs, timeoutMs, fence);
  }

  /** Value and remaining TTL (seconds, -1 = never) of each key; null where missing. */
  getWithTtl(keys: readonly Buffer[]): Promise<({ value: Buffer; ttl: number } | null)[]> {
    const cmd = Buffer.concat(keys.flatMap((k) => [Buffer.from('mg '), k, Buffer.from(' v t\r\n')]));
    return this.conn.batch(cmd, keys.length, getWithTtlReply(this.address));
  }

  /** Sets each key with its TTL (seconds; -1 or 0 = never). */
  async setWithTtl(entries: readonly { key: Buffer; value: Buffer; ttl: number }[]): Promise<void> {
    const outcomes = await this.conn.batch(
      encodeWrites(entries.map((e) => ({ kind: 'set', key: e.key, value: e.value, exptime: e.ttl > 0 ? e.ttl : 0 }))),
      entries.length,
      writeReply(this.address),
      undefined,
      OK,
    );
    const failed = outcomes.find((o): o is Extract<WriteOutcome, { ok: false }> => !o.ok);
    if (failed) throw new Error(`ms failed: ${failed.error}`);
  }

  /**
   * Adds each key with its TTL (seconds; -1 or 0 = never) unless the server holds it already
   * (`ms ... ME`): a copy never overwrites what a write put there meanwhile.
   */
  async addWithTtl(entries: readonly { key: Buffer; value: Buffer; ttl: number }[]): Promise<void> {
    if (entries.length === 0) return;
    const cmd = Buffer.concat(
      entries.flatMap((e) => [Buffer.from('ms '), e.key, Buffer.from(` ${e.value.length} T${e.ttl > 0 ? e.ttl : 0} ME\r\n`, 'latin1'), e.value, Buffer.from('\r\n')]),
    );
    const outcomes = await this.conn.batch(cmd, entries.length, (buf: Buffer, at: number) => {
      const l = lineAt(buf, at);
      if (!l) return undefined;
      // HD: added; NS: the key is there already (a write got there first).
      const value: WriteOutcome = l.line === 'HD' || l.line === 'NS' ? OK : { ok: false, retriable: true, error: `${this.address}: ${l.line}` };
      return { value, next: l.next };
    });
    const failed = outcomes.find((o): o is Extract<WriteOutcome, { ok: false }> => !o.ok);
    if (failed) throw new Error(`ms (add) failed: ${failed.error}`);
  }

  /** Deletes each key (a missing one is fine). */
  async deleteKeys(keys: readonly Buffer[]): Promise<void> {
    if (keys.length === 0) return;
    const outcomes = await this.conn.batch(encodeWrites(keys.map((key) => ({ kind: 'delete' as const, key }))), keys.length, writeReply(this.address), undefined, OK);
    const failed = outcomes.find((o): o is Extract<WriteOutcome, { ok: false }> => !o.ok);
    if (failed) throw new Error(`md failed: ${failed.error}`);
  }

  close(): void {
    this.conn.close();
  }

  /**
   * Lists every key the server holds (`lru_crawler metadump all`, which needs a connection of
   * its own), handing them over in batches.
   */
  static async eachKey(address: string, timeoutMs: number, batch: number, onKeys: (keys: Buffer[]) => Promise<void>): Promise<void> {
    const i = address.lastIndexOf(':');
    const s = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
    let pending: Buffer[] = [];
    let rest: Buffer = Buffer.alloc(0);
    let chain = Promise.resolve();
    await new Promise<void>((resolve, reject) => {
      const t = () => setTimeout(() => s.destroy(new Error(`${address}: metadump stalled`)), timeoutMs);
      let timer = t();
      s.once('connect', () => s.write('lru_crawler metadump all\r\n'));
      s.on('data', (d: Buffer) => {
        clearTimeout(timer);
        timer = t();
        rest = rest.length ? Buffer.concat([rest, d]) : d;
        let nl: number;
        let done = false;
        while ((nl = rest.indexOf(0x0a)) >= 0) {
          const line = rest.subarray(0, nl).toString('latin1').replace(/\r$/, '');
          rest = rest.subarray(nl + 1);
          if (line === 'END') {
            done = true;
            break;
          }
          if (line.startsWith('ERROR') || line.startsWith('BUSY') || line.startsWith('CLIENT_ERROR')) {
            s.destroy(new Error(`${address}: metadump refused: ${line}`));
            return;
          }
          const m = /^key=(\S+)/.exec(line);
          if (m) pending.push(percentDecode(m[1]!));
        }
        if (pending.length >= batch || done) {
          const keys = pending;
          pending = [];
          s.pause();
          clearTimeout(timer); // the time spent handling a batch is not the server's
          chain = chain.then(() => onKeys(keys)).then(
            () => {
              if (done) {
                s.end();
                resolve();
              } else {
                timer = t();
                s.resume();
              }
            },
            (err: Error) => {
              s.destroy(err);
            },
          );
        }
      });
      s.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      s.on('close', () => {
        clearTimeout(timer);
        reject(new Error(`${address}: metadump ended early`)); // no-op once resolved
      });
    });
    await chain;
  }
}

/** metadump URL-encodes keys; decode to the original bytes. */
export function percentDecode(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(Number.parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(c & 0xff);
  }
  return Buffer.from(out);
}
