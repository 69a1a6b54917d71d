/**
 * What `npm run chaos` and `npm run bench` share: the pipeline as real CLI processes, and the
 * checker, which compares every memcached server with the state MySQL committed using none of
 * the pipeline's code (plain text-protocol gets and a plain SQL query) but, for a ketama data
 * center, which servers a key belongs on: that is the ring's, which the reader tests check
 * against nutcracker and pylibmc themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { MemcachedTextClient } from './memcached-text.js';
import { repoRoot } from './stack.js';
import type { ResolvedConfig } from '../src/config/schema.js';
import { type Route } from '../src/sink/routes/route.js';
import { createRoute } from '../src/sink/routes/create-route.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until what `file` holds past `from` matches `re`; false if it does not within timeoutMs. */
export async function waitForLog(file: string, from: number, re: RegExp, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (re.test(fs.readFileSync(file).subarray(from).toString('utf8'))) return true;
    } catch {
      // Not there yet.
    }
    if (Date.now() >= deadline) return false;
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------
// The pipeline's processes

/** One mcrepl CLI process (restartable); its output goes to `<logDir>/<name>.<n>.log`. */
export class Proc {
  child: ChildProcess | undefined;
  private generation = 0;
  /** Set by kill(): the exit that follows is asked for. */
  private killing = false;
  /** Called when the process exits by itself (not through kill()). */
  onUnexpectedExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly logDir: string,
    /** Extra node options (e.g. --cpu-prof). */
    private readonly nodeArgs: string[] = [],
  ) {}

  /** The log of the current (or last) run of the process. */
  get logFile(): string {
    return path.join(this.logDir, `${this.name}.${this.generation}.log`);
  }

  start(): void {
    const log = fs.openSync(path.join(this.logDir, `${this.name}.${++this.generation}.log`), 'a');
    const child = spawn(process.execPath, [...this.nodeArgs, path.join(repoRoot, 'bin', 'mcrepl.js'), ...this.args], { cwd: repoRoot, stdio: ['ignore', log, log] });
    this.child = child;
    this.killing = false;
    child.once('exit', (code, signal) => {
      if (!this.killing && this.child === child) this.onUnexpectedExit?.(code, signal);
    });
    fs.closeSync(log);
  }

  get pid(): number | undefined {
    return this.child && this.child.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    this.killing = true;
    c.kill(signal);
    await Promise.race([exited, sleep(30_000)]);
  }

  /** Peak resident memory so far (VmHWM) and CPU time used, from /proc; undefined once exited. */
  usage(): { peakRssBytes: number; cpuSeconds: number } | undefined {
    const pid = this.pid;
    if (pid === undefined) return undefined;
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      return { peakRssBytes: Number(hwm?.[1] ?? 0) * 1024, cpuSeconds: cpuSecondsOf(pid) };
    } catch {
      return undefined;
    }
  }
}

/** CPU time (user + system) a process has used, from /proc/<pid>/stat; 0 if it is gone. */
export function cpuSecondsOf(pid: number): number {
  try {
    // Fields 14 and 15 (counted after the parenthesised name): utime, stime, in clock ticks.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

export interface SiteStatusJson {
  tailer: string | null;
  datacenters: { name: string; worker: string | null; queued: { waiting: number; active: number; delayed: number; failed: number }; servers: { address: string; health: string; missedOps: number; mustFlush: boolean }[] }[];
}

/** `mcrepl status --json`: one site's report, or (a config with `sites`) one per site. */
export type StatusJson = SiteStatusJson | { sites: (SiteStatusJson & { site: string; error?: string })[] };

export function mcreplStatus(configFile: string): Promise<StatusJson | undefined> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [path.join(repoRoot, 'bin', 'mcrepl.js'), '-c', configFile, 'status', '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (code) => {
      try {
        resolve(code === 0 ? (JSON.parse(out) as StatusJson) : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The checker

export interface Divergence {
  server: string;
  key: string;
  expected: string;
  found: string;
}

export interface CheckResult {
  keysChecked: number;
  comparisons: number;
  present: number;
  skippedAtExpiry: number;
  divergent: Map<string, Divergence[]>;
  /** Keys the registry says hold a value (not near their expiry). */
  liveKeys: Set<string>;
}

/** Whether a server is meant to hold a key (every server, unless its data center shards). */
export type Holds = (server: string, key: string) => boolean;

/** `Holds` for a config's data centers, from their routes. */
export function holdsOf(datacenters: ResolvedConfig['datacenters']): Holds {
  const at = new Map<string, { route: Route; index: number }>();
  for (const dc of Object.values(datacenters)) {
    const route = createRoute(dc);
    route.servers.forEach((server, index) => at.set(server, { route, index }));
  }
  return (server, key) => {
    const a = at.get(server);
    return a ? a.route.holds(a.index, Buffer.from(key)) : true;
  };
}

/** Keys per multi-get; a few hundred keep each reply well under a megabyte. */
const GET_BATCH = 500;

/**
 * Compares `keys` and every key of the registry (optionally of one namespace, or with `listedOnly`
 * only the registry rows of `keys`) on every server with what the registry says: a live key must
 * hold a value with the registry's md5, any other key nothing. Keys within 2 s of their expiry are
 * skipped. The servers are read at the same time, each with multi-gets of a few hundred keys, so
 * a million keys on four servers take seconds.
 */
export async function check(admin: mysql.ConnectionOptions, servers: string[], keys: string[], opts: { nsId?: number; listedOnly?: boolean; holds?: Holds } = {}): Promise<CheckResult> {
  const conn = await mysql.createConnection(admin);
  const where = opts.listedOnly ? (keys.length > 0 ? ' WHERE mc_key IN (?)' : ' WHERE FALSE') : opts.nsId !== undefined ? ' WHERE ns_id = ?' : '';
  const [rows] = await conn.query<RowDataPacket[]>(`SELECT mc_key, expires_at, HEX(value_md5) AS md5 FROM mc_stored_keys${where}`, opts.listedOnly ? [keys] : opts.nsId !== undefined ? [opts.nsId] : []);
  await conn.end();
  const registry = new Map<string, { expiresAt: number | null; md5: string }>();
  for (const r of rows) registry.set((r.mc_key as Buffer).toString('utf8'), { expiresAt: r.expires_at === null ? null : Number(r.expires_at), md5: String(r.md5).toLowerCase() });
  const universe = [...new Set([...keys, ...registry.keys()])];
  const result: CheckResult = { keysChecked: universe.length, comparisons: 0, present: 0, skippedAtExpiry: 0, divergent: new Map(), liveKeys: new Set() };
  const SLACK_S = 2;

  const checkServer = async (server: string) => {
    const client = new MemcachedTextClient(server, 5_000);
    try {
      for (let i = 0; i < universe.length; i += GET_BATCH) {
        const batch = universe.slice(i, i + GET_BATCH);
        const got = await client.getMany(batch);
        const now = Date.now() / 1000;
        for (const key of batch) {
          const value = got.get(key);
          const want = registry.get(key);
          if (want?.expiresAt !== null && want?.expiresAt !== undefined && Math.abs(want.expiresAt - now) <= SLACK_S) {
            result.skippedAtExpiry++;
            continue;
          }
          result.comparisons++;
          const live = want && (want.expiresAt === null || want.expiresAt > now);
          if (live) result.liveKeys.add(key);
          // A server that is not meant to hold the key (ketama) must hold nothing of it.
          const owns = opts.holds?.(server, key) ?? true;
          const gotMd5 = value ? createHash('md5').update(value).digest('hex') : undefined;
          if (value) result.present++;
          let problem: Divergence | undefined;
          if (!owns && value) {
            problem = { server, key, expected: 'nothing (the key is not placed on this server)', found: `a value (md5 ${gotMd5}, ${JSON.stringify(value.toString().slice(0, 40))})` };
          } else if (!owns) {
            // Nothing, as it should.
          } else if (live && gotMd5 !== want.md5) {
            problem = { server, key, expected: `value with md5 ${want.md5}`, found: value ? `a different value (md5 ${gotMd5}, ${JSON.stringify(value.toString().slice(0, 40))})` : 'nothing' };
          } else if (!live && value) {
            problem = { server, key, expected: want ? `nothing (expired at ${new Date(want.expiresAt! * 1000).toISOString()})` : 'nothing (deleted or flushed)', found: `a value (md5 ${gotMd5}, ${JSON.stringify(value.toString().slice(0, 40))})` };
          }
          if (problem) result.divergent.set(key, [...(result.divergent.get(key) ?? []), problem]);
        }
      }
    } finally {
      client.close();
    }
  };
  await Promise.all(servers.map(checkServer));
  return result;
}
