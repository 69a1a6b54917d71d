/** A memcached process owned by one test: started, paused (SIGSTOP), resumed, stopped by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { memcachedArgs } from '../../scripts/stack.js';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { waitFor } from './wait-for.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export class PrivateMemcached {
  private child: ChildProcess | undefined;

  constructor(
    readonly port: number,
    /** A loopback address of its own (127.0.0.2, ...) lets several servers share one port, as a DNS-found pool does. */
    readonly host = '127.0.0.1',
    /** More memcached options (e.g. a smaller item size, `-I 1k`); `start` may change them. */
    public extraArgs: string[] = [],
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  static async create(): Promise<PrivateMemcached> {
    return new PrivateMemcached(await freePort());
  }

  async start(): Promise<void> {
    this.child = spawn('/usr/bin/memcached', [...memcachedArgs(this.port, this.host), ...this.extraArgs], { stdio: 'ignore' });
    await waitFor(async () => {
      const c = new MemcachedTextClient(this.address, 500);
      try {
        await c.stats();
        return true;
      } finally {
        c.close();
      }
    }, { timeoutMs: 5_000, message: `memcached on ${this.port}` });
  }

  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (!c || c.exitCode !== null) return;
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
}
