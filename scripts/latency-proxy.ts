/**
 * A userspace stand-in for distance on loopback (this kernel has no netem): a TCP proxy that
 * delays every chunk of bytes by `delayMs` in each direction (so a round trip through it costs
 * 2 × delayMs more), keeps their order, and can cut the link and heal it.
 *
 * A cut is a partition, not a reset: connections stay open and what either side sends waits on
 * the way (as TCP retransmits it) and arrives after `heal`, late; a connection opened during the
 * cut is accepted but reaches its server only after the heal. Nothing is dropped and nothing is
 * closed by the proxy, so what a process sees is what it would see across a WAN link that goes
 * dark for a while: silence, then the backlog.
 */
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

interface Direction {
  /** Chunks waiting for their time (or for the heal). */
  queue: { at: number; data: Buffer }[];
  timer: NodeJS.Timeout | undefined;
  /** Latest delivery time scheduled, so a chunk never overtakes an earlier one. */
  last: number;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  toServer: Direction;
  toClient: Direction;
  /** Opened during a cut: connects to the server at the heal. */
  connect?: () => void;
}

export interface LatencyProxyOptions {
  targetPort: number;
  targetHost?: string;
  /** One-way delay, ms (the round trip grows by twice this). */
  delayMs?: number;
  /** Port to listen on (0: any free one). */
  port?: number;
}

export class LatencyProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();
  /** Closed by one side during a cut: ended at the heal, after what was on its way. */
  private readonly closing = new Set<Pair>();
  private delayMs: number;
  private cutSince: number | undefined;
  /** Bytes carried, each direction. */
  readonly stats = { connections: 0, bytesToServer: 0, bytesToClient: 0 };
  port = 0;

  constructor(private readonly opts: LatencyProxyOptions) {
    this.delayMs = opts.delayMs ?? 0;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get isCut(): boolean {
    return this.cutSince !== undefined;
  }

  async start(): Promise<number> {
    this.server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port ?? 0, '127.0.0.1', resolve);
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Changes the one-way delay for bytes sent from now on. */
  setDelay(ms: number): void {
    this.delayMs = ms;
  }

  /** Stops carrying bytes, both ways, on every connection (open or new) until `heal`. */
  cut(): void {
    this.cutSince ??= Date.now();
  }

  /** Carries again: what waited is delivered, in order, after the usual delay. */
  heal(): void {
    if (this.cutSince === undefined) return;
    this.cutSince = undefined;
    const now = Date.now();
    for (const p of this.pairs) {
      p.connect?.();
      p.connect = undefined;
      for (const d of [p.toServer, p.toClient]) {
        for (const c of d.queue) c.at = Math.max(c.at, now + this.delayMs);
        d.last = Math.max(d.last, d.queue.at(-1)?.at ?? 0);
        this.schedule(p, d);
      }
    }
    for (const p of [...this.closing]) this.close(p);
  }

  /** Closes every connection and stops listening. */
  async stop(): Promise<void> {
    this.cutSince = undefined;
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
      clearTimeout(p.toServer.timer);
      clearTimeout(p.toClient.timer);
    }
    this.pairs.clear();
    this.closing.clear();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private accept(client: net.Socket): void {
    this.stats.connections++;
    const upstream = new net.Socket();
    const pair: Pair = { client, upstream, toServer: { queue: [], timer: undefined, last: 0 }, toClient: { queue: [], timer: undefined, last: 0 } };
    this.pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('data', (d) => this.enqueue(pair, pair.toServer, d));
    upstream.on('data', (d) => this.enqueue(pair, pair.toClient, d));
    const close = () => this.close(pair);
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', close);
    upstream.on('error', close);
    const connect = () => upstream.connect({ host: this.opts.targetHost ?? '127.0.0.1', port: this.opts.targetPort });
    // Opened during a cut, it reaches the server once the link is back (a SYN retransmitted).
    if (this.cutSince === undefined) connect();
    else pair.connect = connect;
  }

  private enqueue(pair: Pair, d: Direction, data: Buffer): void {
    if (d === pair.toServer) this.stats.bytesToServer += data.length;
    else this.stats.bytesToClient += data.length;
    const target = d === pair.toServer ? pair.upstream : pair.client;
    if (this.delayMs === 0 && d.queue.length === 0 && this.cutSince === undefined && !target.destroyed) {
      target.write(data); // no timer's turn to wait for
      return;
    }
    const at = Math.max(Date.now() + this.delayMs, d.last);
    d.last = at;
    d.queue.push({ at, data });
    if (!d.timer) this.schedule(pair, d);
  }

  /** Delivers what is due, then sleeps until the next chunk is (nothing moves while cut). */
  private schedule(pair: Pair, d: Direction): void {
    clearTimeout(d.timer);
    d.timer = undefined;
    if (this.cutSince !== undefined) return;
    const target = d === pair.toServer ? pair.upstream : pair.client;
    const now = Date.now();
    while (d.queue.length > 0 && d.queue[0]!.at <= now) {
      const c = d.queue.shift()!;
      if (!target.destroyed) target.write(c.data); // a socket still connecting buffers it
    }
    if (d.queue.length > 0) d.timer = setTimeout(() => this.schedule(pair, d), d.queue[0]!.at - now);
  }

  private close(pair: Pair): void {
    if (this.cutSince !== undefined) {
      // The other side learns of the close only once the link is back (its FIN waits too).
      this.closing.add(pair);
      return;
    }
    this.closing.delete(pair);
    if (!this.pairs.delete(pair)) return;
    clearTimeout(pair.toServer.timer);
    clearTimeout(pair.toClient.timer);
    // What is still on its way is delivered first, as a FIN follows the data.
    const end = (s: net.Socket, d: Direction) => {
      if (s.destroyed) return;
      if (d.queue.length === 0) s.destroy();
      else {
        setTimeout(() => {
          for (const c of d.queue.splice(0)) s.write(c.data);
          s.end();
        }, Math.max(0, d.last - Date.now()));
      }
    };
    end(pair.upstream, pair.toServer);
    end(pair.client, pair.toClient);
  }
}

/** Commands a proxy process takes over IPC. */
type ProxyCommand = { cmd: 'cut' } | { cmd: 'heal' } | { cmd: 'delay'; ms: number } | { cmd: 'stats' };

/**
 * The proxy in a process of its own: in the process that also runs a load and a prober, its
 * timers would wait for their turn on a busy event loop and add their own delay.
 */
export class LatencyProxyProcess {
  private child: ChildProcess | undefined;
  port = 0;

  constructor(private readonly opts: LatencyProxyOptions) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<number> {
    const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(this.opts)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child = child;
    this.port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m: { port?: number }) => (m.port ? resolve(m.port) : reject(new Error('the latency proxy did not start'))));
      child.once('exit', (code) => reject(new Error(`the latency proxy exited (${code})`)));
    });
    return this.port;
  }

  cut(): Promise<void> {
    return this.send({ cmd: 'cut' });
  }

  heal(): Promise<void> {
    return this.send({ cmd: 'heal' });
  }

  setDelay(ms: number): Promise<void> {
    return this.send({ cmd: 'delay', ms });
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await exited;
  }

  /** Sends a command and resolves once the proxy applied it. */
  private send(c: ProxyCommand): Promise<void> {
    const child = this.child;
    if (!child) return Promise.reject(new Error('the latency proxy is not running'));
    return new Promise<void>((resolve) => {
      child.once('message', () => resolve());
      child.send(c);
    });
  }
}

// Run as a process (LatencyProxyProcess): the options as JSON in argv[2], commands over IPC.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const proxy = new LatencyProxy(JSON.parse(process.argv[2] ?? '{}') as LatencyProxyOptions);
  const port = await proxy.start();
  process.on('message', (c: ProxyCommand) => {
    if (c.cmd === 'cut') proxy.cut();
    else if (c.cmd === 'heal') proxy.heal();
    else if (c.cmd === 'delay') proxy.setDelay(c.ms);
    process.send!({ ok: true, stats: proxy.stats });
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => void proxy.stop().finally(() => process.exit(0)));
  process.send({ port });
}
