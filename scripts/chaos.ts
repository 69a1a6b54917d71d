/**
 * `npm run chaos`: the pipeline under faults, checked by a checker that shares none of its code.
 *
 * On a private stack of its own (ports 23400-23499 by default, data under .stack/chaos), it
 * runs the real CLI processes: two tailers (one active, one standby) and one worker group per
 * data center. A randomized workload (sets, overwrites, deletes, short TTLs, multi-row
 * transactions, rollbacks and namespace flushes over a few thousand keys in several namespaces,
 * from several connections) runs while faults are injected at random times:
 *
 *   tailer          kill -9 of the active tailer (the standby takes over), restarted
 *   workers         kill -9 of one data center's worker group, restarted
 *   redis           kill -9 of Redis, restarted from its AOF
 *   mariadb         kill -9 of MariaDB, restarted
 *   memcached-kill  kill -9 of one memcached server, restarted empty
 *   memcached-stop  SIGSTOP of one memcached server for 3 client timeouts, then SIGCONT
 *   dc-outage       every memcached server of one data center stopped (SIGSTOP) for a minute
 *
 * Then it lets the pipeline drain and compares every server of every data center with the
 * state MySQL committed (the key registry: value md5 and expiry per key), prints the faults
 * injected and `divergent keys: N`, and exits 0 only when N is 0.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import mysql, { type Connection } from 'mysql2/promise';
import { loadConfig } from '../src/config/load.js';
import { connectMysql } from '../src/registry/mysql.js';
import { installAll } from '../src/registry/schema-installer.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { MemcachedTextClient } from './memcached-text.js';
import { check, mcreplStatus, Proc, sleep } from './harness.js';
import {
  down,
  killMariadb,
  killMemcached,
  killRedis,
  memcachedPid,
  repoRoot,
  restartMemcached,
  stackEnv,
  stackLayout,
  startMariadb,
  startRedis,
  up,
  type StackLayout,
} from './stack.js';

// ---------------------------------------------------------------------------------------------
// Options

const seconds = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number of seconds greater than 0');
  return n;
};
const count = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number greater than 0');
  return n;
};

const program = new Command()
  .name('npm run chaos --')
  .description('Run the pipeline under randomly injected faults, then check every memcached server against MySQL.')
  .option('--duration <seconds>', 'how long the workload and the faults run', seconds, 300)
  .option('--dc-outage <seconds>', "how long one data center's memcached stay stopped (default: a minute, capped at 40% of the duration)", seconds)
  .option('--keys <n>', 'distinct keys', count, 3000)
  .option('--namespaces <n>', 'namespaces the keys are spread over', count, 4)
  .option('--connections <n>', 'writer connections', count, 4)
  .option('--rate <ops>', 'target statements per second over all connections', count, 300)
  .option('--seed <hex>', 'random seed (printed at the start; reuse it to replay the same schedule)')
  .option('--port-base <port>', 'first port of the private stack', count, 23400)
  .option('--keep-stack', 'leave the private stack running afterwards')
  .addHelpText('after', '\nExit codes: 0 no divergent key; 1 divergent keys or the pipeline did not drain; 2 bad usage.');

interface Options {
  duration: number;
  dcOutage?: number;
  keys: number;
  namespaces: number;
  connections: number;
  rate: number;
  seed?: string;
  portBase: number;
  keepStack?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const t0 = Date.now();
const clock = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`;
const say = (msg: string) => process.stdout.write(`[chaos ${clock()}] ${msg}\n`);

/** A small seeded PRNG (mulberry32), so a schedule can be replayed with --seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// The workload

interface WorkloadStats {
  statements: number;
  sets: number;
  ttlSets: number;
  inserts: number;
  deletes: number;
  transactions: number;
  rollbacks: number;
  flushes: number;
  errors: number;
}

class Workload {
  readonly stats: WorkloadStats = { statements: 0, sets: 0, ttlSets: 0, inserts: 0, deletes: 0, transactions: 0, rollbacks: 0, flushes: 0, errors: 0 };
  private stopping = false;
  private seq = 0;

  constructor(
    private readonly writer: mysql.ConnectionOptions,
    private readonly admin: mysql.ConnectionOptions,
    private readonly opts: Options,
    private readonly tag: string,
    private readonly random: () => number,
  ) {}

  key(i: number): { ns: number; key: string } {
    return { ns: (i % this.opts.namespaces) + 1, key: `${this.tag}:${i}` };
  }

  private pick(): { ns: number; key: string } {
    return this.key(Math.floor(this.random() * this.opts.keys));
  }

  private value(): string {
    const len = 8 + Math.floor(this.random() * 200);
    return `${++this.seq}:${randomBytes(Math.ceil(len / 2)).toString('hex').slice(0, len)}`;
  }

  /** One connection's loop; reconnects after errors (MariaDB restarts) and goes on. */
  private async connectionLoop(perConnRate: number): Promise<void> {
    let conn: Connection | undefined;
    const interval = 1000 / perConnRate;
    let next = Date.now();
    while (!this.stopping) {
      next += interval;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -1000) next = Date.now();
      try {
        conn ??= await mysql.createConnection({ ...this.writer, connectTimeout: 2_000 });
        await this.step(conn);
      } catch {
        this.stats.errors++;
        await conn?.destroy();
        conn = undefined;
        await sleep(200);
      }
    }
    await conn?.end().catch(() => undefined);
  }

  private async step(conn: Connection): Promise<void> {
    const r = this.random();
    const { ns, key } = this.pick();
    this.stats.statements++;
    if (r < 0.5) {
      this.stats.sets++;
      await conn.query('CALL set_key(?, ?, ?, 0)', [ns, key, this.value()]);
    } else if (r < 0.65) {
      this.stats.ttlSets++;
      await conn.query('CALL set_key(?, ?, ?, ?)', [ns, key, this.value(), 1 + Math.floor(this.random() * 4)]);
    } else if (r < 0.72) {
      // A plain INSERT into the storage table (the trigger keeps the registry), a set or a delete.
      this.stats.inserts++;
      if (this.random() < 0.7) await conn.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (?, ?, ?, 0)', [ns, key, this.value()]);
      else await conn.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (?, ?, 'delete')", [ns, key]);
    } else if (r < 0.85) {
      this.stats.deletes++;
      await conn.query('CALL delete_key(?, ?)', [ns, key]);
    } else {
      // Several writes in one transaction, some of them to the same key; one in ten rolled back.
      this.stats.transactions++;
      await conn.query('START TRANSACTION');
      for (let i = 0; i < 4; i++) {
        const k = i === 2 ? { ns, key } : this.pick();
        if (this.random() < 0.8) await conn.query('CALL set_key(?, ?, ?, 0)', [k.ns, k.key, this.value()]);
        else await conn.query('CALL delete_key(?, ?)', [k.ns, k.key]);
      }
      if (this.random() < 0.1) {
        this.stats.rollbacks++;
        await conn.query('ROLLBACK');
      } else {
        await conn.query('COMMIT');
      }
    }
  }

  /** A namespace flush every few seconds, through the procedure, as the operators' account. */
  private async flushLoop(): Promise<void> {
    while (!this.stopping) {
      await sleep(4_000 + this.random() * 8_000);
      if (this.stopping) break;
      let conn: Connection | undefined;
      try {
        conn = await mysql.createConnection({ ...this.admin, connectTimeout: 2_000 });
        await conn.query('CALL flush_namespace(?)', [1 + Math.floor(this.random() * this.opts.namespaces)]);
        this.stats.flushes++;
      } catch {
        this.stats.errors++;
      } finally {
        await conn?.end().catch(() => undefined);
      }
    }
  }

  private running: Promise<unknown> | undefined;
  start(): void {
    const perConn = this.opts.rate / this.opts.connections;
    this.running = Promise.all([...Array.from({ length: this.opts.connections }, () => this.connectionLoop(perConn)), this.flushLoop()]);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

interface FaultRecord {
  at: string;
  kind: string;
  target: string;
  detail: string;
}

const FAULT_KINDS = ['tailer', 'workers', 'redis', 'mariadb', 'memcached-kill', 'memcached-stop'] as const;
type FaultKind = (typeof FAULT_KINDS)[number] | 'dc-outage';

class Faults {
  readonly injected: FaultRecord[] = [];
  /** Stopped pids, with how many suspensions hold each (a server stop inside a DC outage nests). */
  private readonly stopped = new Map<number, number>();

  constructor(
    private readonly layout: StackLayout,
    private readonly tailers: Proc[],
    private readonly workers: Map<string, Proc>,
    private readonly configFile: string,
    private readonly clientTimeoutMs: number,
    private readonly random: () => number,
  ) {}

  private record(kind: FaultKind, target: string, detail: string): void {
    this.injected.push({ at: clock().trim(), kind, target, detail });
    say(`fault: ${kind} ${target} (${detail})`);
  }

  private pause = () => 1_000 + this.random() * 2_000;

  async inject(kind: FaultKind, dcOutageMs: number): Promise<void> {
    switch (kind) {
      case 'tailer': {
        // The active one: its pid is in the lease holder (host:pid:nonce).
        const st = await mcreplStatus(this.configFile);
        const activePid = Number(st?.tailer?.split(':').at(-2));
        const active = this.tailers.find((t) => t.pid === activePid);
        const victim = active ?? this.tailers.find((t) => t.pid !== undefined)!;
        const pid = victim.pid;
        await victim.kill('SIGKILL');
        this.record(kind, victim.name, `kill -9 of the ${active ? 'active' : 'first running'} tailer (pid ${pid}); the standby takes over`);
        await sleep(this.pause());
        if (!this.halted) victim.start();
        return;
      }
      case 'workers': {
        const dcs = [...this.workers.keys()];
        const dc = dcs[Math.floor(this.random() * dcs.length)]!;
        const p = this.workers.get(dc)!;
        await p.kill('SIGKILL');
        const ms = this.pause();
        this.record(kind, dc, `kill -9 of the worker group, restarted after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) p.start();
        return;
      }
      case 'redis': {
        await killRedis(this.layout);
        const ms = this.pause();
        this.record(kind, `127.0.0.1:${this.layout.redis.port}`, `kill -9, restarted from its AOF after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) await startRedis(this.layout);
        return;
      }
      case 'mariadb': {
        await killMariadb(this.layout.mariadb);
        const ms = this.pause();
        this.record(kind, `127.0.0.1:${this.layout.mariadb.port}`, `kill -9, restarted after ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms);
        if (!this.halted) await startMariadb(this.layout.mariadb);
        return;
      }
      case 'memcached-kill': {
        const m = this.layout.memcached[Math.floor(this.random() * this.layout.memcached.length)]!;
        await killMemcached(this.layout, m.name);
        if (!this.halted) await restartMemcached(this.layout, m.name);
        this.record(kind, `${m.name} 127.0.0.1:${m.port}`, 'kill -9, restarted empty');
        return;
      }
      case 'memcached-stop': {
        const m = this.layout.memcached[Math.floor(this.random() * this.layout.memcached.length)]!;
        const ms = this.clientTimeoutMs * 3;
        await this.suspend([m.name], ms);
        this.record(kind, `${m.name} 127.0.0.1:${m.port}`, `SIGSTOP for ${(ms / 1000).toFixed(1)} s (client timeout ${this.clientTimeoutMs} ms), then SIGCONT`);
        return;
      }
      case 'dc-outage': {
        const dcs = [...this.workers.keys()];
        const dc = dcs[Math.floor(this.random() * dcs.length)]!;
        const names = this.layout.memcached.filter((m) => m.dc === dc).map((m) => m.name);
        say(`fault: dc-outage ${dc} begins (${names.join(', ')} stopped for ${(dcOutageMs / 1000).toFixed(0)} s)`);
        await this.suspend(names, dcOutageMs);
        this.record(kind, dc, `every memcached server (${names.join(', ')}) stopped for ${(dcOutageMs / 1000).toFixed(0)} s, then continued`);
        return;
      }
    }
  }

  /**
   * SIGSTOP the servers for `ms`, then SIGCONT (a server restarted meanwhile is left alone). A
   * server another suspension still holds (a stop during its data center's outage) stays stopped
   * until that one ends too.
   */
  private async suspend(names: string[], ms: number): Promise<void> {
    const pids = names.map((n) => memcachedPid(this.layout, n)).filter((p): p is number => p !== undefined);
    for (const pid of pids) {
      process.kill(pid, 'SIGSTOP');
      this.stopped.set(pid, (this.stopped.get(pid) ?? 0) + 1);
    }
    try {
      await sleep(ms);
    } finally {
      for (const pid of pids) {
        const holds = (this.stopped.get(pid) ?? 1) - 1;
        if (holds > 0) this.stopped.set(pid, holds);
        else this.resume(pid);
      }
    }
  }

  private resume(pid: number): void {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // Gone meanwhile (killed by another fault).
    }
    this.stopped.delete(pid);
  }

  /** Interrupted: faults in progress restart nothing any more. */
  halted = false;

  /** Whatever happens, nothing stays stopped. */
  resumeAll(): void {
    for (const pid of [...this.stopped.keys()]) this.resume(pid);
  }
}

// ---------------------------------------------------------------------------------------------

async function waitForKeyEverywhere(servers: string[], key: string, value: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const clients = servers.map((s) => new MemcachedTextClient(s, 2_000));
  try {
    while (Date.now() < deadline) {
      const got = await Promise.all(clients.map((c) => c.get(key).catch(() => null)));
      if (got.every((g) => g?.value.toString() === value)) return true;
      await sleep(200);
    }
    return false;
  } finally {
    for (const c of clients) c.close();
  }
}

async function waitForDrain(configFile: string, timeoutMs: number): Promise<{ drained: boolean; last: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no status';
  let calm = 0;
  while (Date.now() < deadline) {
    const st = await mcreplStatus(configFile);
    if (st) {
      const dcs = st.datacenters;
      const backlog = dcs.reduce((n, d) => n + d.queued.waiting + d.queued.active + d.queued.delayed, 0);
      const unhealthy = dcs.flatMap((d) => d.servers.filter((s) => s.health !== 'healthy' || s.missedOps > 0 || s.mustFlush).map((s) => `${s.address} ${s.health}${s.missedOps ? ` (${s.missedOps} missed ops)` : ''}`));
      const noWorker = dcs.filter((d) => !d.worker).map((d) => d.name);
      last = `tailer ${st.tailer ? 'active' : 'none'}, backlog ${backlog} jobs, ${unhealthy.length ? `not healthy: ${unhealthy.join(', ')}` : 'all servers healthy'}${noWorker.length ? `, no worker group: ${noWorker.join(', ')}` : ''}`;
      // Calm twice in a row, a second apart: nothing queued, nothing kept, everyone running.
      if (st.tailer && backlog === 0 && unhealthy.length === 0 && noWorker.length === 0) {
        if (++calm >= 2) return { drained: true, last };
      } else {
        calm = 0;
      }
    }
    await sleep(1_000);
  }
  return { drained: false, last };
}

async function main(): Promise<number> {
  program.parse(process.argv);
  const opts = program.opts<Options>();
  const seed = opts.seed ? Number.parseInt(opts.seed, 16) : randomBytes(4).readUInt32BE();
  const random = rng(seed);
  const durationMs = opts.duration * 1000;
  const dcOutageMs = Math.min((opts.dcOutage ?? 60) * 1000, durationMs * 0.4);

  const layout = stackLayout(path.join(repoRoot, '.stack', 'chaos'), opts.portBase);
  say(`seed ${seed.toString(16)}; duration ${opts.duration} s; private stack on ports ${opts.portBase}-${opts.portBase + 99} under ${path.relative(repoRoot, layout.dir)}`);
  const { started } = await up(layout);
  say(started.length ? `stack started: ${started.join(', ')}` : 'stack already running');
  // Interrupted (Ctrl-C, or the test that runs it timing out): leave nothing running behind.
  const stopStack = async () => {
    if (!opts.keepStack && started.length > 0) await down(layout);
  };
  let onInterrupt = stopStack;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping the pipeline and the private stack`);
      void onInterrupt().finally(() => process.exit(130));
    });
  }

  const runId = randomBytes(3).toString('hex');
  const logDir = path.join(layout.dir, 'logs', runId);
  fs.mkdirSync(logDir, { recursive: true });
  const { config } = loadConfig({
    env: stackEnv(layout),
    overrides: {
      'mysql.database': `chaos_${runId}`,
      'mysql.serverId': 200_000 + (seed % 1_000_000),
      'redis.prefix': `chaos-${runId}`,
      partitions: 4,
      'datacenters.east': { servers: layout.memcached.filter((m) => m.dc === 'east').map((m) => `127.0.0.1:${m.port}`) },
      'datacenters.west': { servers: layout.memcached.filter((m) => m.dc === 'west').map((m) => `127.0.0.1:${m.port}`) },
      // A standby takes over within 3 s; a stopped memcached counts as down after 1 s.
      'tailer.leaseTtlMs': 3_000,
      'worker.leaseTtlMs': 3_000,
      'memcached.timeoutMs': 1_000,
    },
  });
  const configFile = writeConfigFile(config);
  const installer = await connectMysql(config.mysql, { database: false });
  await installAll(installer, config);
  for (let ns = 1; ns <= opts.namespaces; ns++) await installer.query(`CALL \`${config.mysql.database}\`.create_namespace(?, ?)`, [ns, `chaos${ns}`]);
  await installer.end();

  const tailers = [new Proc('tailer-a', ['-c', configFile, 'tailer'], logDir), new Proc('tailer-b', ['-c', configFile, 'tailer'], logDir)];
  const workers = new Map(Object.keys(config.datacenters).map((dc) => [dc, new Proc(`worker-${dc}`, ['-c', configFile, 'worker', dc], logDir)]));
  const all = [...tailers, ...workers.values()];
  for (const p of workers.values()) p.start();
  for (const t of tailers) t.start();
  say(`pipeline: ${all.map((p) => `${p.name} (pid ${p.pid})`).join(', ')}; logs in ${path.relative(repoRoot, logDir)}`);

  const mysqlOpts = (role: 'writer' | 'admin'): mysql.ConnectionOptions => {
    const c = mysqlFor(config.mysql, role);
    return { host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database };
  };
  const tag = `chaos-${runId}`;
  const workload = new Workload(mysqlOpts('writer'), mysqlOpts('admin'), opts, tag, random);
  const faults = new Faults(layout, tailers, workers, configFile, config.memcached.timeoutMs, random);
  onInterrupt = async () => {
    faults.halted = true;
    faults.resumeAll();
    await workload.stop().catch(() => undefined);
    await Promise.all(all.map((p) => p.kill('SIGKILL')));
    await stopStack();
  };

  let exitCode = 1;
  try {
    await sleep(2_000);
    workload.start();
    say(`workload: ${opts.connections} connections, ~${opts.rate} statements/s over ${opts.keys} keys in ${opts.namespaces} namespaces, namespace flushes every 4-12 s`);
    const end = Date.now() + durationMs;

    // One data center's outage, at a random time in the first half, beside the other faults.
    const outageAt = Date.now() + durationMs * (0.1 + 0.4 * random()) * ((durationMs - dcOutageMs) / durationMs);
    const outage = (async () => {
      await sleep(Math.max(0, outageAt - Date.now()));
      await faults.inject('dc-outage', dcOutageMs);
    })();

    // The others one after another: every kind once (shuffled), then at random.
    const order = [...FAULT_KINDS].sort(() => random() - 0.5);
    const gapMs = Math.max(2_000, Math.min(10_000, (durationMs - 10_000) / (FAULT_KINDS.length * 2.5)));
    while (Date.now() < end - 8_000) {
      await sleep(gapMs * (0.5 + random()));
      if (Date.now() >= end - 8_000) break;
      const kind = order.shift() ?? FAULT_KINDS[Math.floor(random() * FAULT_KINDS.length)]!;
      await faults.inject(kind, dcOutageMs);
    }
    await outage;
    const left = end - Date.now();
    if (left > 0) await sleep(left);
    await workload.stop();
    const w = workload.stats;
    say(`workload stopped: ${w.statements} statements (${w.sets} sets, ${w.ttlSets} with a TTL, ${w.inserts} direct INSERTs, ${w.deletes} deletes, ${w.transactions} transactions of which ${w.rollbacks} rolled back), ${w.flushes} namespace flushes, ${w.errors} client errors (during faults)`);

    say('letting the pipeline drain');
    // A last write: once it is on every server and nothing is queued, kept or unhealthy, the
    // pipeline has applied everything MySQL committed before it.
    const sentinel = `${tag}:sentinel`;
    const servers = Object.values(config.datacenters).flatMap((d) => d.servers);
    for (;;) {
      try {
        const c = await mysql.createConnection(mysqlOpts('writer'));
        await c.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'end']);
        await c.end();
        break;
      } catch (err) {
        say(`sentinel write failed (${err instanceof Error ? err.message : String(err)}); retrying`);
        await sleep(1_000);
      }
    }
    const sentinelSeen = await waitForKeyEverywhere(servers, sentinel, 'end', 180_000);
    const drain = sentinelSeen ? await waitForDrain(configFile, 180_000) : { drained: false, last: 'the last write did not reach every server within 180 s' };
    say(drain.drained ? `drained: ${drain.last}` : `NOT drained after 180 s: ${drain.last}`);

    const keys = Array.from({ length: opts.keys }, (_, i) => workload.key(i).key);
    const result = await check(mysqlOpts('admin'), servers, keys);

    process.stdout.write('\nfaults injected:\n');
    for (const f of faults.injected) process.stdout.write(`  ${f.at.padStart(7)}  ${f.kind.padEnd(15)} ${f.target.padEnd(24)} ${f.detail}\n`);
    const kinds = new Set(faults.injected.map((f) => f.kind));
    const missing = [...FAULT_KINDS, 'dc-outage'].filter((k) => !kinds.has(k));
    process.stdout.write(`  ${faults.injected.length} faults, ${kinds.size} kinds${missing.length ? ` (not injected, the run was too short: ${missing.join(', ')})` : ''}\n`);
    process.stdout.write(
      `\nchecked ${result.keysChecked} keys on ${servers.length} servers: ${result.comparisons} comparisons, ${result.present} values present, ${result.skippedAtExpiry} skipped within 2 s of their expiry\n`,
    );
    let shown = 0;
    for (const [, ds] of result.divergent) {
      for (const d of ds) if (shown++ < 20) process.stdout.write(`  DIVERGENT ${d.server} ${d.key}: expected ${d.expected}, found ${d.found}\n`);
    }

    // The checker checks: a stale value planted on one server must be found.
    const live = keys.find((k) => result.liveKeys.has(k));
    let selfTest = 'skipped (no live key)';
    if (live) {
      const planted = new MemcachedTextClient(servers[servers.length - 1]!);
      await planted.set(live, 'planted-stale-value');
      planted.close();
      const again = await check(mysqlOpts('admin'), servers, [live]);
      const found = again.divergent.get(live)?.some((d) => d.server === servers[servers.length - 1] && d.found.startsWith('a different value'));
      selfTest = found ? 'a stale value planted on one server was found' : 'FAILED: a stale value planted on one server was not found';
      const fix = new MemcachedTextClient(servers[servers.length - 1]!);
      await fix.delete(live);
      fix.close();
    }
    process.stdout.write(`checker self-test: ${selfTest}\n`);
    process.stdout.write(`divergent keys: ${result.divergent.size}\n`);
    exitCode = result.divergent.size === 0 && drain.drained && !selfTest.startsWith('FAILED') ? 0 : 1;
  } finally {
    faults.resumeAll();
    await workload.stop().catch(() => undefined);
    await Promise.all(all.map((p) => p.kill('SIGTERM')));
    await Promise.all(all.map((p) => p.kill('SIGKILL')));
    if (!opts.keepStack && started.length > 0) {
      await down(layout);
      // Its data is kept only to look into a failed run.
      if (exitCode === 0) fs.rmSync(layout.dir, { recursive: true, force: true });
      say(`private stack stopped${exitCode === 0 ? ' and removed' : `; its data and the pipeline's logs are kept in ${path.relative(repoRoot, layout.dir)}`}`);
    }
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[chaos] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
