/**
 * The readers applications use in front of a ketama pool, started by the tests: nutcracker
 * (twemproxy) as a process of the test's own, stopped by its PID, and pylibmc (libmemcached,
 * `ketama_weighted`) through Debian's python. `ensureReaders` (scripts/stack.ts) installs both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { stopChild } from './child.js';
import { waitFor } from './wait-for.js';

export interface NutcrackerPool {
  hash: 'fnv1a_64' | 'md5';
  /** twemproxy's server lines: `host:port:weight [name]`. */
  servers: string[];
  /** Send a failing server's keys to the next one of the ring (twemproxy's `auto_eject_hosts`). */
  autoEject?: boolean;
  /** Failures in a row before a server is ejected (`server_failure_limit`). */
  failureLimit?: number;
  /** How long an ejected server stays out before it is tried again (`server_retry_timeout`, ms). */
  retryTimeoutMs?: number;
  /** Per-request timeout towards a server (`timeout`, ms). */
  timeoutMs?: number;
}

export class Nutcracker {
  private child: ChildProcess | undefined;
  private runs = 0;

  constructor(
    readonly port: number,
    private readonly statsPort: number,
    private readonly dir: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(pool: NutcrackerPool): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    const conf = path.join(this.dir, `nutcracker-${this.port}-${this.runs++}.yml`);
    fs.writeFileSync(
      conf,
      [
        'pool:',
        `  listen: ${this.address}`,
        `  hash: ${pool.hash}`,
        '  distribution: ketama',
        `  auto_eject_hosts: ${pool.autoEject ? 'true' : 'false'}`,
        ...(pool.autoEject ? [`  server_failure_limit: ${pool.failureLimit ?? 1}`, `  server_retry_timeout: ${pool.retryTimeoutMs ?? 30_000}`] : []),
        ...(pool.timeoutMs ? [`  timeout: ${pool.timeoutMs}`] : []),
        '  servers:',
        ...pool.servers.map((s) => `    - ${s}`),
        '',
      ].join('\n'),
    );
    this.child = spawn('nutcracker', ['-c', conf, '-s', String(this.statsPort), '-a', '127.0.0.1', '-o', path.join(this.dir, `nutcracker-${this.port}.log`)], { stdio: 'ignore' });
    await waitFor(
      async () => {
        const probe = new MemcachedTextClient(this.address, 1_000);
        const ok = await probe.get('nutcracker-probe').then(() => true, () => false);
        probe.close();
        return ok;
      },
      { timeoutMs: 10_000, message: 'nutcracker to answer' },
    );
  }

  async stop(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    await stopChild(c);
  }
}

/** Runs a python script with Debian's python3 (which has pylibmc; another python3 may come first on PATH). */
async function python(script: string, input: string): Promise<string> {
  const child = spawn('/usr/bin/python3', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdin.end(input);
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  if (code !== 0) throw new Error(`python exited with ${code}: ${err}`);
  return Buffer.concat(out).toString();
}

const pylibmcClient = (servers: string[]) => `pylibmc.Client(${JSON.stringify(servers)}, behaviors={"ketama_weighted": True})`;

/** Sets each key (to "v") through pylibmc with KETAMA_WEIGHTED; `servers`: `host:port[:weight]`. */
export async function pylibmcSet(servers: string[], keys: Buffer[]): Promise<void> {
  await python(['import sys, pylibmc', `c = ${pylibmcClient(servers)}`, 'for line in sys.stdin:', '    c.set(bytes.fromhex(line.strip()), b"v")'].join('\n'), keys.map((k) => k.toString('hex')).join('\n') + '\n');
}

/** Reads each key through pylibmc with KETAMA_WEIGHTED; null where it finds nothing. */
export async function pylibmcGet(servers: string[], keys: Buffer[]): Promise<(Buffer | null)[]> {
  const out = await python(
    [
      'import sys, pylibmc',
      `c = ${pylibmcClient(servers)}`,
      'keys = [bytes.fromhex(l.strip()) for l in sys.stdin if l.strip()]',
      'for i in range(0, len(keys), 500):',
      '    got = c.get_multi(keys[i:i + 500])',
      '    for k in keys[i:i + 500]:',
      '        v = got.get(k)',
      '        print("-" if v is None else v.hex())',
    ].join('\n'),
    keys.map((k) => k.toString('hex')).join('\n') + '\n',
  );
  const lines = out.split('\n').filter((l) => l !== '');
  if (lines.length !== keys.length) throw new Error(`pylibmc answered ${lines.length} of ${keys.length} keys`);
  return lines.map((l) => (l === '-' ? null : Buffer.from(l, 'hex')));
}
