/**
 * The local stack: private MariaDB, Redis and memcached instances on non-default loopback
 * ports, with data under `.stack/` (git-ignored). Used by the demo, the tests and CI.
 *
 *   node dist/scripts/stack.js up [--sentinel] | down | status
 *
 * `up --sentinel` also starts a replica of the stack's Redis and three Redis Sentinels watching
 * it as the group `mcrepl` (config/local-sentinel.yaml connects through them); see
 * `sentinelGroup` for the ports.
 * `up` installs missing Debian packages when run as root, and is idempotent: a service whose
 * recorded PID is alive (and is ours: its command line names our port or data dir) is left
 * alone. `down` stops exactly what `up` started, by PID. Nothing here ever touches a server
 * this script did not start.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { Redis } from 'ioredis';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface MemcachedSpec {
  dc: string;
  name: string;
  port: number;
}

export interface StackLayout {
  dir: string;
  mariadb: { port: number; datadir: string; socket: string; pidFile: string; logFile: string };
  redis: { port: number; dir: string; confFile: string; pidFile: string; logFile: string };
  memcached: MemcachedSpec[];
  /** Admin credentials for the private MariaDB (generated at first `up`). */
  secretsDir: string;
  /** The replica and sentinels `up --sentinel` adds; its primary is `redis` above. */
  sentinel: SentinelGroup;
}

/** One redis-server process (a primary, a replica, or a sentinel). */
export interface RedisNode {
  name: string;
  port: number;
  dir: string;
  confFile: string;
  pidFile: string;
  logFile: string;
}

/**
 * A Redis primary, its replica and three sentinels watching them as the master group `name`,
 * all on loopback. Sentinels and replicas have their config rewritten by Sentinel (after a
 * failover, the old primary's says `replicaof`), so each has its own file, written only when
 * it does not exist yet.
 */
export interface SentinelGroup {
  name: string;
  dir: string;
  primary: RedisNode;
  replica: RedisNode;
  sentinels: RedisNode[];
  /** Sentinel's down-after-milliseconds: how long a silent primary takes to count as down. */
  downAfterMs: number;
}

const envInt = (name: string, dflt: number): number => {
  const v = process.env[name];
  return v ? Number.parseInt(v, 10) : dflt;
};

/**
 * Ports default to a block no stock install uses; MCREPL_STACK_PORT_BASE moves the whole block
 * and MCREPL_STACK_DIR the data.
 */
export function stackLayout(
  dir = process.env.MCREPL_STACK_DIR ?? path.join(repoRoot, '.stack'),
  base = envInt('MCREPL_STACK_PORT_BASE', 23300),
  /** memcached servers per data center (at most 9 each). */
  perDc: { east: number; west: number } = { east: 2, west: 2 },
): StackLayout {
  const mdir = path.join(dir, 'mariadb');
  // Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep checkouts.
  let socket = path.join(mdir, 'mysqld.sock');
  if (socket.length > 100) socket = path.join('/tmp', `mcrepl-${hashPath(dir)}.sock`);
  return {
    dir,
    mariadb: {
      port: base + 6,
      datadir: path.join(mdir, 'data'),
      socket,
      pidFile: path.join(mdir, 'mysqld.pid'),
      logFile: path.join(mdir, 'mysqld.log'),
    },
    redis: {
      port: base + 79,
      dir: path.join(dir, 'redis'),
      confFile: path.join(dir, 'redis', 'redis.conf'),
      pidFile: path.join(dir, 'redis', 'redis.pid'),
      logFile: path.join(dir, 'redis', 'redis.log'),
    },
    memcached: (['east', 'west'] as const).flatMap((dc, d) => Array.from({ length: perDc[dc] }, (_, i) => ({ dc, name: `${dc}-${i + 1}`, port: base + 11 + 10 * d + i }))),
    secretsDir: path.join(dir, 'secrets'),
    // Redis is base+79 (and the TLS test's base+80): the replica and sentinels follow it.
    sentinel: sentinelGroup(path.join(dir, 'redis-sentinel'), 'mcrepl', { primary: base + 79, replica: base + 81, sentinels: [base + 82, base + 83, base + 84] }, {
      primary: { name: 'redis', port: base + 79, dir: path.join(dir, 'redis'), confFile: path.join(dir, 'redis', 'redis.conf'), pidFile: path.join(dir, 'redis', 'redis.pid'), logFile: path.join(dir, 'redis', 'redis.log') },
    }),
  };
}

/** The layout of a sentinel group under `dir` (see SentinelGroup). */
export function sentinelGroup(
  dir: string,
  name: string,
  ports: { primary: number; replica: number; sentinels: number[] },
  opts: { primary?: RedisNode; downAfterMs?: number } = {},
): SentinelGroup {
  const node = (n: string, port: number): RedisNode => {
    const d = path.join(dir, n);
    return { name: n, port, dir: d, confFile: path.join(d, `${n}.conf`), pidFile: path.join(d, `${n}.pid`), logFile: path.join(d, `${n}.log`) };
  };
  return {
    name,
    dir,
    primary: opts.primary ?? node('primary', ports.primary),
    replica: node('replica', ports.replica),
    sentinels: ports.sentinels.map((p, i) => node(`sentinel-${i + 1}`, p)),
    downAfterMs: opts.downAfterMs ?? 2_000,
  };
}

function hashPath(p: string): string {
  let h = 2166136261;
  for (let i = 0; i < p.length; i++) h = Math.imul(h ^ p.charCodeAt(i), 16777619) >>> 0;
  return h.toString(16);
}

const log = (msg: string) => process.stderr.write(`[stack] ${msg}\n`);

// ---------------------------------------------------------------------------------------------
// Packages

const REQUIRED = [
  { bin: ['/usr/sbin/mariadbd', '/usr/bin/mariadb-install-db'], pkg: 'mariadb-server' },
  { bin: ['/usr/bin/redis-server'], pkg: 'redis-server' },
  { bin: ['/usr/bin/memcached'], pkg: 'memcached' },
  // saslpasswd2, for the memcached servers with SASL authentication (-S) the tests start.
  { bin: ['/usr/sbin/saslpasswd2'], pkg: 'sasl2-bin' },
  // openssl, for the certificates of the TLS Redis the tests start.
  { bin: ['/usr/bin/openssl'], pkg: 'openssl' },
];

/** The readers the ketama tests check placement against: twemproxy, and pylibmc (libmemcached). */
const READERS = [
  { bin: ['/usr/sbin/nutcracker'], pkg: 'nutcracker' },
  { bin: ['/usr/lib/python3/dist-packages/pylibmc/__init__.py'], pkg: 'python3-pylibmc' },
  // The DNS server the pool-discovery test runs (the binary only: no system service).
  { bin: ['/usr/sbin/dnsmasq'], pkg: 'dnsmasq-base' },
];

export function ensureReaders(): void {
  ensurePackages(READERS);
}

/** Prometheus and promtool, for the metrics test (the binaries: no service is started). */
const MONITORING = [{ bin: ['/usr/bin/prometheus', '/usr/bin/promtool'], pkg: 'prometheus' }];

export function ensureMonitoring(): void {
  ensurePackages(MONITORING);
}

export function ensurePackages(required = REQUIRED): void {
  const missing = required.filter((r) => !r.bin.every((b) => fs.existsSync(b))).map((r) => r.pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`missing packages: ${missing.join(', ')}; install them (sudo apt-get install -y ${missing.join(' ')}) or run as root`);
  }
  log(`installing ${missing.join(', ')} with apt-get`);
  // Debian starts a daemon when its package is installed; a policy-rc.d that answers 101
  // ("action forbidden") keeps the system services stopped, so we never start a server we
  // would not own. Only ours is created and removed.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !fs.existsSync(policy);
  if (ownPolicy) fs.writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    run('apt-get', ['update', '-qq'], env);
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], env);
  } finally {
    if (ownPolicy) fs.rmSync(policy, { force: true });
  }
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed with status ${r.status}`);
}

// ---------------------------------------------------------------------------------------------
// Process helpers

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A PID is ours only if it is alive and its command line carries our marker (port or path). */
function ownedPid(file: string, marker: string): number | undefined {
  const pid = readPid(file);
  return pid !== undefined && isOurs(pid, marker) ? pid : undefined;
}

/** The process is alive (not a zombie) and its command line contains `marker`. */
function isOurs(pid: number, marker: string): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false; // zombie
    return cmdline.includes(marker);
  } catch {
    return false;
  }
}

function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.setTimeout(500);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(false));
  });
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) {
      const tail = logFile && fs.existsSync(logFile) ? `\n--- ${logFile} (tail) ---\n${fs.readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n')}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until nothing listens on `port` (a killed process holds its socket until it is gone and reaped). */
function portReleased(what: string, port: number): Promise<void> {
  return waitUntil(`${what} to release port ${port}`, async () => !(await portOpen(port)), 10_000);
}

function spawnDetached(cmd: string, args: string[], logFile: string, pidFile?: string, env?: NodeJS.ProcessEnv): number {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', out, out], ...(env ? { env } : {}) });
  fs.closeSync(out);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
  if (pidFile) fs.writeFileSync(pidFile, `${child.pid}\n`);
  return child.pid;
}

async function stopPid(name: string, pidFile: string, marker: string, timeoutMs = 60_000): Promise<boolean> {
  const pid = ownedPid(pidFile, marker);
  if (pid === undefined) {
    fs.rmSync(pidFile, { force: true });
    return false;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (ownedPid(pidFile, marker) !== undefined) {
    if (Date.now() > deadline) {
      log(`${name} (pid ${pid}) did not stop after SIGTERM; sending SIGKILL`);
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  fs.rmSync(pidFile, { force: true });
  return true;
}

const asRoot = () => process.getuid?.() === 0;

// ---------------------------------------------------------------------------------------------
// MariaDB

export interface MariadbInstance {
  port: number;
  datadir: string;
  socket: string;
  pidFile: string;
  logFile: string;
}

/**
 * The binlog settings mcrepl needs. MariaDB's defaults are MIXED format and no BLACKHOLE
 * engine, and `--no-defaults` falls back to latin1, so every one of these is spelled out.
 */
export const MARIADB_BINLOG_ARGS = [
  '--log-bin=mariadb-bin',
  '--binlog-format=ROW',
  '--binlog-row-image=FULL',
  '--binlog-row-metadata=FULL',
  '--binlog-annotate-row-events=OFF',
];

/** Start a private mariadbd (initialising its data dir on first use). Idempotent. */
export async function startMariadb(inst: MariadbInstance, extraArgs: string[] = MARIADB_BINLOG_ARGS): Promise<'started' | 'running'> {
  if (ownedPid(inst.pidFile, inst.datadir) !== undefined) return 'running';
  if (await portOpen(inst.port)) {
    throw new Error(`port ${inst.port} is in use by a process this stack did not start; stop it or set MCREPL_STACK_PORT_BASE`);
  }
  fs.mkdirSync(path.dirname(inst.pidFile), { recursive: true });
  if (!fs.existsSync(path.join(inst.datadir, 'mysql'))) {
    fs.mkdirSync(inst.datadir, { recursive: true });
    const args = ['--no-defaults', `--datadir=${inst.datadir}`, '--auth-root-authentication-method=normal', '--skip-test-db'];
    if (asRoot()) args.push('--user=root');
    const r = spawnSync('mariadb-install-db', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mariadb-install-db failed:\n${r.stdout}\n${r.stderr}`);
  }
  const args = [
    '--no-defaults',
    `--datadir=${inst.datadir}`,
    `--port=${inst.port}`,
    '--bind-address=127.0.0.1',
    `--socket=${inst.socket}`,
    `--pid-file=${inst.pidFile}`,
    `--log-error=${inst.logFile}`,
    '--server-id=1',
    '--plugin-load-add=ha_blackhole',
    '--character-set-server=utf8mb4',
    '--collation-server=utf8mb4_unicode_ci',
    '--skip-name-resolve',
    '--max-allowed-packet=64M',
    '--max-connections=500',
    '--innodb-buffer-pool-size=256M',
    // A process crash (kill -9) loses nothing with these: the OS still holds the data.
    '--innodb-flush-log-at-trx-commit=2',
    '--sync-binlog=0',
    ...extraArgs,
  ];
  if (asRoot()) args.push('--user=root');
  // mariadbd writes its own pid file; we also need it before the server gets that far.
  const pid = spawnDetached('/usr/sbin/mariadbd', args, path.join(path.dirname(inst.pidFile), 'mysqld.stdout'), inst.pidFile);
  await waitUntil(`MariaDB on port ${inst.port}`, async () => {
    try {
      const c = await mysql.createConnection({ socketPath: inst.socket, user: 'root', password: '' });
      await c.end();
      return true;
    } catch {
      // The process itself, not its pid file, which mariadbd rewrites while it starts.
      if (!isOurs(pid, inst.datadir)) throw new Error(`mariadbd exited; see ${inst.logFile}`);
      return false;
    }
  }, 60_000, inst.logFile);
  return 'started';
}

export async function stopMariadb(inst: MariadbInstance): Promise<boolean> {
  return stopPid('mariadbd', inst.pidFile, inst.datadir);
}

/** kill -9 of a private mariadbd (fault tests); it can be started again with startMariadb. */
export async function killMariadb(inst: MariadbInstance): Promise<void> {
  const pid = ownedPid(inst.pidFile, inst.datadir);
  if (pid === undefined) return;
  process.kill(pid, 'SIGKILL');
  while (ownedPid(inst.pidFile, inst.datadir) !== undefined) await new Promise((r) => setTimeout(r, 50));
  await portReleased('mariadbd', inst.port);
}

/** Admin account for the private MariaDB; the password lives in a file, never on a command line. */
export const STACK_ADMIN_USER = 'mcrepl_admin';

function ensureSecret(dir: string, name: string): string {
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, randomBytes(18).toString('base64url'), { mode: 0o600 });
  }
  return fs.readFileSync(file, 'utf8').trim();
}

/** Creates (or refreshes) the admin account on a private MariaDB, through its socket. */
export async function ensureAdminUser(socket: string, secretsDir: string): Promise<void> {
  const password = ensureSecret(secretsDir, 'mysql-admin');
  const c = await mysql.createConnection({ socketPath: socket, user: 'root', password: '' });
  try {
    await c.query(`CREATE USER IF NOT EXISTS ?@'127.0.0.1' IDENTIFIED BY ?`, [STACK_ADMIN_USER, password]);
    await c.query(`ALTER USER ?@'127.0.0.1' IDENTIFIED BY ?`, [STACK_ADMIN_USER, password]);
    await c.query(`GRANT ALL PRIVILEGES ON *.* TO ?@'127.0.0.1' WITH GRANT OPTION`, [STACK_ADMIN_USER]);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Redis and memcached

export async function startRedis(layout: StackLayout): Promise<'started' | 'running'> {
  const r = layout.redis;
  if (ownedPid(r.pidFile, redisMarker(r.port)) !== undefined) return 'running';
  if (await portOpen(r.port)) throw new Error(`port ${r.port} is in use by a process this stack did not start; stop it or set MCREPL_STACK_PORT_BASE`);
  fs.mkdirSync(r.dir, { recursive: true });
  const password = ensureSecret(layout.secretsDir, 'redis');
  fs.writeFileSync(r.confFile, [...redisDataConf(r.port, r.dir, r.logFile, password), ''].join('\n'), { mode: 0o600 });
  spawnDetached('/usr/bin/redis-server', [r.confFile], path.join(r.dir, 'redis.stdout'), r.pidFile);
  // Without AUTH a live Redis answers NOAUTH, which is all this needs to know.
  await waitUntil(`Redis on port ${r.port}`, () => ping(r.port, 'PING\r\n', '-NOAUTH'), 30_000, r.logFile);
  return 'started';
}

/** redis-server rewrites its process title to `redis-server host:port`. */
const redisMarker = (port: number) => `127.0.0.1:${port}`;

function memcachedPidFile(layout: StackLayout, m: MemcachedSpec) {
  return path.join(layout.dir, 'memcached', `${m.name}.pid`);
}

/**
 * Item memory of each memcached (MB; MCREPL_STACK_MEMCACHED_MB). `npm run bench` keeps ~350 MB
 * per server at once (the drain's keys, the bulk transaction's million, the flush namespaces): a
 * full server evicts, and under a burst of sets can refuse one ("SERVER_ERROR out of memory
 * storing object"), which the workers take for a server down. Memory is only taken as it fills.
 */
const MEMCACHED_MB = envInt('MCREPL_STACK_MEMCACHED_MB', 512);

export function memcachedArgs(port: number, host = '127.0.0.1'): string[] {
  const args = ['-p', String(port), '-l', host, '-U', '0', '-m', String(MEMCACHED_MB), '-c', '4096', '-t', '2'];
  if (asRoot()) args.push('-u', 'root');
  return args;
}

async function startMemcached(layout: StackLayout, m: MemcachedSpec): Promise<'started' | 'running'> {
  const pidFile = memcachedPidFile(layout, m);
  if (ownedPid(pidFile, `-p ${m.port} `) !== undefined) return 'running';
  if (await portOpen(m.port)) throw new Error(`port ${m.port} (${m.name}) is in use by a process this stack did not start; stop it or set MCREPL_STACK_PORT_BASE`);
  fs.mkdirSync(path.dirname(pidFile), { recursive: true });
  spawnDetached('/usr/bin/memcached', memcachedArgs(m.port), path.join(path.dirname(pidFile), `${m.name}.log`), pidFile);
  await waitUntil(`memcached ${m.name} on port ${m.port}`, () => ping(m.port, 'version\r\n', 'VERSION'), 10_000);
  return 'started';
}

/** The SASL user of the stack's SASL memcached servers; its password is in secrets/memcached-sasl. */
export const STACK_SASL_USER = 'mcrepl';

/**
 * A memcached server that requires SASL PLAIN authentication (-S; binary protocol only), with
 * its own sasldb under the stack's folder. Stop it with stopSaslMemcached (by PID).
 */
export async function startSaslMemcached(layout: StackLayout, name: string, port: number): Promise<{ address: string; username: string; passwordFile: string }> {
  ensurePackages();
  const dir = path.join(layout.dir, 'memcached-sasl', name);
  fs.mkdirSync(dir, { recursive: true });
  const password = ensureSecret(layout.secretsDir, 'memcached-sasl');
  const db = path.join(dir, 'sasldb2');
  const r = spawnSync('/usr/sbin/saslpasswd2', ['-p', '-a', 'memcached', '-c', '-f', db, STACK_SASL_USER], { input: `${password}\n` });
  if (r.status !== 0) throw new Error(`saslpasswd2 failed: ${r.stderr.toString()}`);
  fs.writeFileSync(path.join(dir, 'memcached.conf'), `mech_list: plain\nsasldb_path: ${db}\n`);
  const pidFile = path.join(dir, 'memcached.pid');
  if (ownedPid(pidFile, `-p ${port} `) === undefined) {
    if (await portOpen(port)) throw new Error(`port ${port} is in use by a process this stack did not start`);
    spawnDetached('/usr/bin/memcached', [...memcachedArgs(port), '-S'], path.join(dir, 'memcached.log'), pidFile, { ...process.env, SASL_CONF_PATH: dir });
    // Under -S the text protocol is off (the connection is dropped): that it listens is enough.
    await waitUntil(`memcached ${name} (SASL) on port ${port}`, () => portOpen(port), 10_000);
  }
  return { address: `127.0.0.1:${port}`, username: STACK_SASL_USER, passwordFile: path.join(layout.secretsDir, 'memcached-sasl') };
}

export async function stopSaslMemcached(layout: StackLayout, name: string, port: number): Promise<void> {
  await stopPid(`memcached ${name}`, path.join(layout.dir, 'memcached-sasl', name, 'memcached.pid'), `-p ${port} `);
}

/** Send one line, expect a reply starting with `expect`. */
function ping(port: number, line: string, expect: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    s.setTimeout(1000);
    s.once('connect', () => s.write(line));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) { s.destroy(); resolve(buf.startsWith(expect)); }
    });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel

/** A sentinel's ID (40 hex digits), fixed by its port so that each can list the others up front. */
const sentinelId = (port: number) => createHash('sha1').update(`mcrepl-sentinel:${port}`).digest('hex');

/**
 * Starts one redis-server (with `--sentinel`, a sentinel) from `conf`, which is written only
 * if the node has no config file yet: Sentinel rewrites it to record what it learnt (who is
 * the primary now), and the next start must keep that.
 */
async function startRedisNode(node: RedisNode, conf: string[], sentinel: boolean): Promise<'started' | 'running'> {
  if (ownedPid(node.pidFile, redisMarker(node.port)) !== undefined) return 'running';
  if (await portOpen(node.port)) throw new Error(`port ${node.port} (${node.name}) is in use by a process this stack did not start; stop it or set MCREPL_STACK_PORT_BASE`);
  fs.mkdirSync(node.dir, { recursive: true });
  if (!fs.existsSync(node.confFile)) fs.writeFileSync(node.confFile, `${conf.join('\n')}\n`, { mode: 0o600 });
  spawnDetached('/usr/bin/redis-server', [node.confFile, ...(sentinel ? ['--sentinel'] : [])], path.join(node.dir, `${node.name}.stdout`), node.pidFile);
  await waitUntil(`${node.name} on port ${node.port}`, () => ping(node.port, 'PING\r\n', '-NOAUTH'), 30_000, node.logFile);
  return 'started';
}

/** The data node settings of a group (primary and replica alike): the stack Redis's, plus quick replication. */
function groupNodeConf(node: RedisNode, password: string, replicaOf?: number): string[] {
  return [
    ...redisDataConf(node.port, node.dir, node.logFile, password),
    // A replica's first sync starts at once (the default waits 5 s for more replicas).
    'repl-diskless-sync-delay 0',
    ...(replicaOf ? [`replicaof 127.0.0.1 ${replicaOf}`] : []),
  ];
}

/**
 * A data node's settings, the stack Redis's and a Sentinel group's alike. Durable enough for the
 * fault tests: AOF, fsync every second; never evict queued jobs. The password is in the file
 * (mode 600), not on redis-server's command line; `masterauth` too, for when it is (or is
 * demoted to) a replica.
 */
function redisDataConf(port: number, dir: string, logFile: string, password: string): string[] {
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    'protected-mode yes',
    `dir ${dir}`,
    'daemonize no',
    'appendonly yes',
    'appendfsync everysec',
    'save ""',
    'maxmemory-policy noeviction',
    `requirepass ${password}`,
    `masterauth ${password}`,
    `logfile ${logFile}`,
  ];
}

/**
 * Starts the group: its primary (unless `primary: false`: the stack's own Redis, started by
 * `up`), the replica, and the sentinels, then waits until every sentinel sees the replica in
 * sync and the other sentinels (so that a failover can happen from then on). The Redis password
 * is `secrets/redis` and the sentinels' own is `secrets/redis-sentinel`.
 */
export async function startSentinelGroup(group: SentinelGroup, secretsDir: string, opts: { primary: boolean }): Promise<string[]> {
  ensurePackages();
  const password = ensureSecret(secretsDir, 'redis');
  const sentinelPassword = ensureSecret(secretsDir, 'redis-sentinel');
  const started: string[] = [];
  if (opts.primary && (await startRedisNode(group.primary, groupNodeConf(group.primary, password), false)) === 'started') started.push(group.primary.name);
  if ((await startRedisNode(group.replica, groupNodeConf(group.replica, password, group.primary.port), false)) === 'started') started.push(group.replica.name);
  for (const s of group.sentinels) {
    const conf = [
      `port ${s.port}`,
      'bind 127.0.0.1',
      `dir ${s.dir}`,
      'daemonize no',
      `logfile ${s.logFile}`,
      `requirepass ${sentinelPassword}`,
      // ...which the sentinels also use with each other.
      `sentinel sentinel-pass ${sentinelPassword}`,
      `sentinel myid ${sentinelId(s.port)}`,
      `sentinel monitor ${group.name} 127.0.0.1 ${group.primary.port} ${Math.floor(group.sentinels.length / 2) + 1}`,
      `sentinel auth-pass ${group.name} ${password}`,
      `sentinel down-after-milliseconds ${group.name} ${group.downAfterMs}`,
      `sentinel failover-timeout ${group.name} 10000`,
      `sentinel parallel-syncs ${group.name} 1`,
      // Known from the start, rather than discovered over the next 10 s.
      `sentinel known-replica ${group.name} 127.0.0.1 ${group.replica.port}`,
      ...group.sentinels.filter((o) => o !== s).map((o) => `sentinel known-sentinel ${group.name} 127.0.0.1 ${o.port} ${sentinelId(o.port)}`),
    ];
    if ((await startRedisNode(s, conf, true)) === 'started') started.push(s.name);
  }
  await waitUntil(`the sentinels of '${group.name}' to see its replica in sync and each other`, async () => {
    for (const s of group.sentinels) {
      const ok = await withSentinel(s.port, sentinelPassword, async (c) => {
        const replicas = ((await c.call('SENTINEL', 'REPLICAS', group.name)) as string[][]).map(pairs);
        const peers = ((await c.call('SENTINEL', 'SENTINELS', group.name)) as string[][]).map(pairs);
        return (
          replicas.some((r) => !/s_down|disconnected/.test(r.flags ?? '') && r['master-link-status'] === 'ok') &&
          peers.filter((p) => !/s_down|disconnected/.test(p.flags ?? '')).length === group.sentinels.length - 1
        );
      }).catch(() => false);
      if (!ok) return false;
    }
    return true;
  }, 30_000, group.sentinels[0]?.logFile);
  return started;
}

/** `['a', '1', 'b', '2']` → `{ a: '1', b: '2' }` (how Sentinel lists fields). */
function pairs(flat: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i]!] = flat[i + 1]!;
  return o;
}

async function withSentinel<T>(port: number, password: string, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, retryStrategy: () => null, enableReadyCheck: false, maxRetriesPerRequest: 0 });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return await fn(c);
  } finally {
    c.disconnect();
  }
}

/** The port of the group's primary, as the first sentinel that answers says. */
export async function sentinelPrimaryPort(group: SentinelGroup, secretsDir: string): Promise<number> {
  const password = ensureSecret(secretsDir, 'redis-sentinel');
  for (const s of group.sentinels) {
    const addr = await withSentinel(s.port, password, (c) => c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', group.name) as Promise<[string, string] | null>).catch(() => null);
    if (addr) return Number(addr[1]);
  }
  throw new Error(`no sentinel of '${group.name}' answers`);
}

/** The group's processes that are running, by name, with their PIDs. */
export function sentinelGroupStatus(group: SentinelGroup, withPrimary: boolean): ServiceStatus[] {
  return [...(withPrimary ? [group.primary] : []), group.replica, ...group.sentinels].map((n) => ({ name: `redis ${n.name}`, port: n.port, pid: ownedPid(n.pidFile, redisMarker(n.port)) }));
}

/** PID of one node of a group (undefined when it is not running). */
export function redisNodePid(node: RedisNode): number | undefined {
  return ownedPid(node.pidFile, redisMarker(node.port));
}

/** kill -9 of one node of a group (by its PID); returns once its port is free. */
export async function killRedisNode(node: RedisNode): Promise<void> {
  const pid = redisNodePid(node);
  if (pid !== undefined) process.kill(pid, 'SIGKILL');
  while (redisNodePid(node) !== undefined) await new Promise((r) => setTimeout(r, 20));
  await portReleased(node.name, node.port);
}

/** Stops what startSentinelGroup started, by PID: the sentinels first (no failover while the rest stops). */
export async function stopSentinelGroup(group: SentinelGroup, opts: { primary: boolean }): Promise<string[]> {
  const stopped: string[] = [];
  for (const n of [...group.sentinels, group.replica, ...(opts.primary ? [group.primary] : [])]) {
    if (await stopPid(`redis ${n.name}`, n.pidFile, redisMarker(n.port))) stopped.push(`redis ${n.name}`);
  }
  return stopped;
}

// ---------------------------------------------------------------------------------------------
// The whole stack

export interface UpResult {
  /** Services this call started (empty when everything was already running). */
  started: string[];
}

export async function up(layout = stackLayout(), opts: { sentinel?: boolean } = {}): Promise<UpResult> {
  ensurePackages();
  fs.mkdirSync(layout.dir, { recursive: true });
  const started: string[] = [];
  if ((await startMariadb(layout.mariadb)) === 'started') started.push('mariadb');
  await ensureAdminUser(layout.mariadb.socket, layout.secretsDir);
  // Passwords of the role accounts (created by `mcrepl schema install`): files, never argv.
  for (const r of Object.keys(STACK_ROLE_USERS)) ensureSecret(layout.secretsDir, `mysql-role-${r}`);
  if ((await startRedis(layout)) === 'started') started.push('redis');
  for (const m of layout.memcached) {
    if ((await startMemcached(layout, m)) === 'started') started.push(`memcached ${m.name}`);
  }
  if (opts.sentinel) started.push(...(await startSentinelGroup(layout.sentinel, layout.secretsDir, { primary: false })).map((n) => `redis ${n}`));
  return { started };
}

export async function down(layout = stackLayout()): Promise<string[]> {
  const stopped: string[] = [];
  // The replica and sentinels of `up --sentinel`, if they run.
  stopped.push(...(await stopSentinelGroup(layout.sentinel, { primary: false })));
  for (const m of layout.memcached) {
    if (await stopPid(`memcached ${m.name}`, memcachedPidFile(layout, m), `-p ${m.port} `)) stopped.push(`memcached ${m.name}`);
  }
  if (await stopPid('redis', layout.redis.pidFile, redisMarker(layout.redis.port))) stopped.push('redis');
  if (await stopMariadb(layout.mariadb)) stopped.push('mariadb');
  return stopped;
}

export interface ServiceStatus {
  name: string;
  port: number;
  pid?: number;
}

export function status(layout = stackLayout()): ServiceStatus[] {
  return [
    { name: 'mariadb', port: layout.mariadb.port, pid: ownedPid(layout.mariadb.pidFile, layout.mariadb.datadir) },
    { name: 'redis', port: layout.redis.port, pid: ownedPid(layout.redis.pidFile, redisMarker(layout.redis.port)) },
    ...layout.memcached.map((m) => ({ name: `memcached ${m.name}`, port: m.port, pid: ownedPid(memcachedPidFile(layout, m), `-p ${m.port} `) })),
    // Listed only after `up --sentinel` (their pid files are there until `down`).
    ...sentinelGroupStatus(layout.sentinel, false).filter((_, i) => fs.existsSync([layout.sentinel.replica, ...layout.sentinel.sentinels][i]!.pidFile)),
  ];
}

/** kill -9 of the stack's Redis (fault tests); startRedis brings it back with its AOF. */
export async function killRedis(layout: StackLayout): Promise<void> {
  const pid = ownedPid(layout.redis.pidFile, redisMarker(layout.redis.port));
  if (pid === undefined) return;
  process.kill(pid, 'SIGKILL');
  while (ownedPid(layout.redis.pidFile, redisMarker(layout.redis.port)) !== undefined) await new Promise((r) => setTimeout(r, 20));
  await portReleased('Redis', layout.redis.port);
}

function memcachedNamed(layout: StackLayout, name: string): MemcachedSpec {
  const m = layout.memcached.find((x) => x.name === name);
  if (!m) throw new Error(`no memcached named ${name}`);
  return m;
}

/** PID of one memcached server of the stack (undefined when it is not running). */
export function memcachedPid(layout: StackLayout, name: string): number | undefined {
  const m = memcachedNamed(layout, name);
  return ownedPid(memcachedPidFile(layout, m), `-p ${m.port} `);
}

/** kill -9 of one memcached server of the stack; returns once its port is free again. */
export async function killMemcached(layout: StackLayout, name: string): Promise<void> {
  const pid = memcachedPid(layout, name);
  if (pid !== undefined) process.kill(pid, 'SIGKILL');
  await portReleased(`memcached ${name}`, memcachedNamed(layout, name).port);
}

/** Restart one memcached server of the stack (it comes back empty). Used by fault tests. */
export async function restartMemcached(layout: StackLayout, name: string): Promise<void> {
  const m = memcachedNamed(layout, name);
  await stopPid(`memcached ${m.name}`, memcachedPidFile(layout, m), `-p ${m.port} `);
  await portReleased(`memcached ${name}`, m.port);
  await startMemcached(layout, m);
}

/** The accounts each role of mcrepl runs as on the local stack (created by `mcrepl schema install`). */
export const STACK_ROLE_USERS = { tailer: 'mcrepl_tailer', admin: 'mcrepl_ops', writer: 'mcrepl_writer' } as const;

/** Connection settings of the stack, for the example config, the demo and the tests. */
export function stackEnv(layout = stackLayout()): Record<string, string> {
  const role = (r: keyof typeof STACK_ROLE_USERS) => {
    ensureSecret(layout.secretsDir, `mysql-role-${r}`);
    return JSON.stringify({ user: STACK_ROLE_USERS[r], passwordFile: path.join(layout.secretsDir, `mysql-role-${r}`), host: '127.0.0.1' });
  };
  return {
    MCREPL_MYSQL__HOST: '127.0.0.1',
    MCREPL_MYSQL__PORT: String(layout.mariadb.port),
    MCREPL_MYSQL__USER: STACK_ADMIN_USER,
    MCREPL_MYSQL__PASSWORD_FILE: path.join(layout.secretsDir, 'mysql-admin'),
    MCREPL_MYSQL__TAILER: role('tailer'),
    MCREPL_MYSQL__ADMIN: role('admin'),
    MCREPL_MYSQL__WRITER: role('writer'),
    MCREPL_REDIS__PORT: String(layout.redis.port),
    MCREPL_REDIS__PASSWORD_FILE: path.join(layout.secretsDir, 'redis'),
  };
}

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'status';
  const layout = stackLayout();
  switch (cmd) {
    case 'up': {
      const { started } = await up(layout, { sentinel: argv.includes('--sentinel') });
      log(started.length ? `started: ${started.join(', ')}` : 'already running');
      for (const s of status(layout)) log(`${s.name.padEnd(18)} 127.0.0.1:${s.port}  pid ${s.pid}`);
      return 0;
    }
    case 'down': {
      const stopped = await down(layout);
      log(stopped.length ? `stopped: ${stopped.join(', ')}` : 'nothing was running');
      return 0;
    }
    case 'status': {
      let allUp = true;
      for (const s of status(layout)) {
        allUp &&= s.pid !== undefined;
        log(`${s.name.padEnd(18)} 127.0.0.1:${s.port}  ${s.pid ? `running, pid ${s.pid}` : 'stopped'}`);
      }
      return allUp ? 0 : 3;
    }
    default:
      process.stderr.write('usage: stack.js up [--sentinel] | down | status\n');
      return 2;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
    process.stderr.write(`[stack] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
