/**
 * A plain memcached text-protocol client (`get`, `set`, `stats`), written independently of
 * mcrepl's writers: the demo and the tests read servers the way an application would.
 */
import net from 'node:net';

export interface TextGetResult {
  value: Buffer;
  flags: number;
}

/** One connection, one request at a time. */
export class MemcachedTextClient {
  private socket: net.Socket | undefined;
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private error: Error | undefined;

  constructor(readonly address: string, private readonly timeoutMs = 2_000) {}

  private async connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    const [host, port] = this.address.split(':');
    const s = net.connect({ host: host!, port: Number(port) });
    this.buf = Buffer.alloc(0);
    this.error = undefined;
    s.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    s.on('error', (e) => {
      this.error = e;
      this.waiter?.();
    });
    s.on('close', () => {
      this.error ??= new Error(`${this.address}: connection closed`);
      this.waiter?.();
    });
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    this.socket = s;
    return s;
  }

  /** Waits until `parse` can make sense of the buffer; returns what it returns. */
  private async read<T>(parse: (b: Buffer) => { value: T; used: number } | undefined): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      let r: { value: T; used: number } | undefined;
      try {
        r = parse(this.buf);
      } catch (err) {
        // A reply it cannot read (an error line): the rest of the stream cannot be trusted.
        this.socket?.destroy();
        this.socket = undefined;
        throw err;
      }
      if (r) {
        this.buf = this.buf.subarray(r.used);
        return r.value;
      }
      if (this.error) throw this.error;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.socket?.destroy();
        this.socket = undefined;
        throw new Error(`${this.address}: no reply within ${this.timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  async get(key: string | Buffer): Promise<TextGetResult | null> {
    const s = await this.connect();
    s.write(Buffer.concat([Buffer.from('get '), Buffer.from(key), Buffer.from('\r\n')]));
    return this.read((b) => {
      const eol = b.indexOf('\r\n');
      if (eol < 0) return undefined;
      const line = b.subarray(0, eol).toString('latin1');
      if (line === 'END') return { value: null, used: eol + 2 };
      // The key is any bytes but a space (\S would stop at a 0xA0 byte, a no-break space in latin1).
      const m = /^VALUE [^ ]+ (\d+) (\d+)/.exec(line);
      if (!m) throw new Error(`${this.address}: unexpected reply '${line}'`);
      const len = Number(m[2]);
      const end = eol + 2 + len + 2 + 5; // data \r\n END\r\n
      if (b.length < end) return undefined;
      return { value: { value: Buffer.from(b.subarray(eol + 2, eol + 2 + len)), flags: Number(m[1]) }, used: end };
    });
  }

  /** Multi-get (`get k1 k2 ...`, one round trip): the keys that are there (latin1), with their values. */
  async getMany(keys: readonly string[]): Promise<Map<string, Buffer>> {
    const s = await this.connect();
    s.write(`get ${keys.join(' ')}\r\n`);
    return this.read(multiGetReply(this.address));
  }

  /** Multi-get of keys of any bytes: each key's value, or null, in the order of `keys`. */
  async getEach(keys: readonly Buffer[]): Promise<(Buffer | null)[]> {
    const s = await this.connect();
    s.write(Buffer.concat([Buffer.from('get'), ...keys.flatMap((k) => [Buffer.from(' '), k]), Buffer.from('\r\n')]));
    const found = await this.read(multiGetReply(this.address));
    return keys.map((k) => found.get(k.toString('latin1')) ?? null);
  }

  async set(key: string | Buffer, value: string | Buffer, exptime = 0): Promise<void> {
    const s = await this.connect();
    const v = Buffer.from(value);
    s.write(Buffer.concat([Buffer.from('set '), Buffer.from(key), Buffer.from(` 0 ${exptime} ${v.length}\r\n`), v, Buffer.from('\r\n')]));
    const line = await this.readLine();
    if (line !== 'STORED') throw new Error(`${this.address}: set failed: ${line}`);
  }

  /** Deletes a key; true if it existed. */
  async delete(key: string | Buffer): Promise<boolean> {
    const s = await this.connect();
    s.write(Buffer.concat([Buffer.from('delete '), Buffer.from(key), Buffer.from('\r\n')]));
    const line = await this.readLine();
    if (line !== 'DELETED' && line !== 'NOT_FOUND') throw new Error(`${this.address}: delete failed: ${line}`);
    return line === 'DELETED';
  }

  async stats(): Promise<Record<string, string>> {
    const s = await this.connect();
    s.write('stats\r\n');
    return this.read((b) => {
      const end = b.indexOf('END\r\n');
      if (end < 0) return undefined;
      const out: Record<string, string> = {};
      for (const line of b.subarray(0, end).toString('latin1').split('\r\n')) {
        const m = /^STAT (\S+) (.*)$/.exec(line);
        if (m) out[m[1]!] = m[2]!;
      }
      return { value: out, used: end + 5 };
    });
  }

  private readLine(): Promise<string> {
    return this.read((b) => {
      const eol = b.indexOf('\r\n');
      return eol < 0 ? undefined : { value: b.subarray(0, eol).toString('latin1'), used: eol + 2 };
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }
}

/** Reads a multi-get's reply: key (latin1) → value, once END has arrived. */
function multiGetReply(address: string): (b: Buffer) => { value: Map<string, Buffer>; used: number } | undefined {
  return (b) => {
    const found = new Map<string, Buffer>();
    let at = 0;
    for (;;) {
      const eol = b.indexOf('\r\n', at);
      if (eol < 0) return undefined;
      const line = b.subarray(at, eol).toString('latin1');
      if (line === 'END') return { value: found, used: eol + 2 };
      const m = /^VALUE ([^ ]+) \d+ (\d+)/.exec(line);
      if (!m) throw new Error(`${address}: unexpected reply '${line}'`);
      const len = Number(m[2]);
      if (b.length < eol + 2 + len + 2) return undefined;
      found.set(m[1]!, Buffer.from(b.subarray(eol + 2, eol + 2 + len)));
      at = eol + 2 + len + 2;
    }
  };
}

/** Deletes one key from a server with a fresh connection. */
export async function textDelete(address: string, key: string | Buffer): Promise<boolean> {
  const c = new MemcachedTextClient(address);
  try {
    return await c.delete(key);
  } finally {
    c.close();
  }
}

/** Reads one key from a server with a fresh connection. */
export async function textGet(address: string, key: string | Buffer): Promise<Buffer | null> {
  const c = new MemcachedTextClient(address);
  try {
    return (await c.get(key))?.value ?? null;
  } finally {
    c.close();
  }
}
