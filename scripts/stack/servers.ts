/** The stack's servers: MariaDB, Redis (and a Sentinel group), memcached (plain and SASL). */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { Redis } from 'ioredis';
import { envInt, type MemcachedSpec, type RedisNode, type SentinelGroup, type ServiceStatus, type StackLayout } from './layout.js';
import { ensurePackages } from './packages.js';
import { asRoot, isOurs, ownedPid, portOpen, portReleased, spawnDetached, stopPid, waitUntil } from './processes.js';

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

export function ensureSecret(dir: string, name: string): string {
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
export const redisMarker = (port: number) => `127.0.0.1:${port}`;

export function memcachedPidFile(layout: StackLayout, m: MemcachedSpec) {
  return path.join(layout.dir, 'memcached', `${m.name}.pid`);
}

/**
 * Item memory of each memcached (MB; MCREPL_STACK_MEMCACHED_MB). `npm run bench` keeps ~350 MB
 * per server at once (the drain's keys, the bulk transaction's million, the flush namespaces): a
 * full server evicts, and under a burst of sets can refuse one ("SERVER_ERROR out of memory
 * storing object"), which the workers take for a server down. Memory is only taken as it fills.
 */
export const MEMCACHED_MB = envInt('MCREPL_STACK_MEMCACHED_MB', 512);

export function memcachedArgs(port: number, host = '127.0.0.1'): string[] {
  const args = ['-p', String(port), '-l', host, '-U', '0', '-m', String(MEMCACHED_MB), '-c', '4096', '-t', '2'];
  if (asRoot()) args.push('-u', 'root');
  return args;
}

export async function startMemcached(layout: StackLayout, m: MemcachedSpec): Promise<'started' | 'running'> {
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
export function ping(port: number, line: string, expect: string): Promise<boolean> {
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
export const sentinelId = (port: number) => createHash('sha1').update(`mcrepl-sentinel:${port}`).digest('hex');

/**
 * Starts one redis-server (with `--sentinel`, a sentinel) from `conf`, which is written only
 * if the node has no config file yet: Sentinel rewrites it to record what it learnt (who is
 * the primary now), and the next start must keep that.
 */
export async function startRedisNode(node: RedisNode, conf: string[], sentinel: boolean): Promise<'started' | 'running'> {
  if (ownedPid(node.pidFile, redisMarker(node.port)) !== undefined) return 'running';
  if (await portOpen(node.port)) throw new Error(`port ${node.port} (${node.name}) is in use by a process this stack did not start; stop it or set MCREPL_STACK_PORT_BASE`);
  fs.mkdirSync(node.dir, { recursive: true });
  if (!fs.existsSync(node.confFile)) fs.writeFileSync(node.confFile, `${conf.join('\n')}\n`, { mode: 0o600 });
  spawnDetached('/usr/bin/redis-server', [node.confFile, ...(sentinel ? ['--sentinel'] : [])], path.join(node.dir, `${node.name}.stdout`), node.pidFile);
  await waitUntil(`${node.name} on port ${node.port}`, () => ping(node.port, 'PING\r\n', '-NOAUTH'), 30_000, node.logFile);
  return 'started';
}

/** The data node settings of a group (primary and replica alike): the stack Redis's, plus quick replication. */
export function groupNodeConf(node: RedisNode, password: string, replicaOf?: number): string[] {
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
export function redisDataConf(port: number, dir: string, logFile: string, password: string): string[] {
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
export function pairs(flat: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i]!] = flat[i + 1]!;
  return o;
}

export async function withSentinel<T>(port: number, password: string, fn: (c: Redis) => Promise<T>): Promise<T> {
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

