/**
 * A small pipelined client for memcached's text and meta protocol, for what memjs (binary
 * protocol) cannot do: list a server's keys (`lru_crawler metadump`), and read a value together
 * with its remaining TTL (`mg <key> v t`) to copy it to another server (`ms <key> <n> T<ttl>`).
 * Used to warm a server that came back empty from a healthy peer.
 */
import net from 'node:net';

interface Pending {
  parse: (buf: Buffer) => { value: unknown; used: number } | undefined;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

const CRLF = Buffer.from('\r\n');

export class MetaClient {
  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private readonly queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly address: string,
    private readonly timeoutMs: number,
  ) {}

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= new Promise<net.Socket>((resolve, reject) => {
      const i = this.address.lastIndexOf(':');
      const s = net.connect({ host: this.address.slice(0, i), port: Number(this.address.slice(i + 1)) });
      s.setNoDelay(true);
      const fail = (err: Error) => {
        this.connecting = undefined;
        this.fail(err);
        reject(err);
      };
      const t = setTimeout(() => {
        s.destroy();
        fail(new Error(`${this.address}: connect timed out`));
      }, this.timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        this.socket = s;
        this.connecting = undefined;
        resolve(s);
      });
      s.on('data', (d: Buffer) => this.onData(d));
      s.on('error', (err) => {
        clearTimeout(t);
        fail(err);
      });
      s.on('close', () => this.fail(new Error(`${this.address}: connection closed`)));
    });
    return this.connecting;
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.queue.length > 0) {
      let r;
      try {
        r = this.queue[0]!.parse(this.buf);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (!r) break;
      this.buf = this.buf.subarray(r.used);
      this.queue.shift()!.resolve(r.value);
    }
    this.armTimer();
  }

  private armTimer(): void {
    clearTimeout(this.timer);
    if (this.queue.length > 0) this.timer = setTimeout(() => this.fail(new Error(`${this.address}: no reply within ${this.timeoutMs} ms`)), this.timeoutMs);
  }

  private fail(err: Error): void {
    clearTimeout(this.timer);
    this.socket?.destroy();
    this.socket = undefined;
    this.buf = Buffer.alloc(0);
    for (const p of this.queue.splice(0)) p.reject(err);
  }

  private async request<T>(cmd: Buffer, parse: Pending['parse']): Promise<T> {
    const s = await this.connect();
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ parse, resolve: resolve as (v: unknown) => void, reject });
      s.write(cmd);
      if (this.queue.length === 1) this.armTimer();
    });
  }

  /** Value and remaining TTL (seconds, -1 = never) of each key; null where missing. */
  getWithTtl(keys: readonly Buffer[]): Promise<({ value: Buffer; ttl: number } | null)[]> {
    return Promise.all(
      keys.map((k) =>
        this.request<{ value: Buffer; ttl: number } | null>(Buffer.concat([Buffer.from('mg '), k, Buffer.from(' v t\r\n')]), (b) => {
          const eol = b.indexOf(CRLF);
          if (eol < 0) return undefined;
          const line = b.subarray(0, eol).toString('latin1');
          if (line === 'EN') return { value: null, used: eol + 2 };
          const m = /^VA (\d+)(.*)$/.exec(line);
          if (!m) throw new Error(`${this.address}: unexpected reply to mg: ${line}`);
          const len = Number(m[1]);
          if (b.length < eol + 2 + len + 2) return undefined;
          const ttl = /\bt(-?\d+)/.exec(m[2]!);
          return { value: { value: Buffer.from(b.subarray(eol + 2, eol + 2 + len)), ttl: ttl ? Number(ttl[1]) : -1 }, used: eol + 2 + len + 2 };
        }),
      ),
    );
  }

  /** Sets each key with its TTL (seconds; -1 or 0 = never). */
  async setWithTtl(entries: readonly { key: Buffer; value: Buffer; ttl: number }[]): Promise<void> {
    await Promise.all(
      entries.map((e) =>
        this.request<void>(Buffer.concat([Buffer.from('ms '), e.key, Buffer.from(` ${e.value.length} T${e.ttl > 0 ? e.ttl : 0}\r\n`), e.value, CRLF]), (b) => {
          const eol = b.indexOf(CRLF);
          if (eol < 0) return undefined;
          const line = b.subarray(0, eol).toString('latin1');
          if (line !== 'HD') throw new Error(`${this.address}: ms failed: ${line}`);
          return { value: undefined, used: eol + 2 };
        }),
      ),
    );
  }

  close(): void {
    this.fail(new Error(`${this.address}: closed`));
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
