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
 *
 * The parts: stack/layout.ts (ports and paths), stack/packages.ts (provisioning: apt-get),
 * stack/processes.ts (supervision: PIDs, ports, starting and stopping), stack/servers.ts (each
 * server); this file puts them together (up, down, status, faults for the chaos run) and
 * re-exports them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stackLayout, type MemcachedSpec, type ServiceStatus, type StackLayout } from './stack/layout.js';
import { log } from './stack/log.js';
import { ensurePackages } from './stack/packages.js';
import { ownedPid, portReleased, stopPid } from './stack/processes.js';
import {
  STACK_ADMIN_USER,
  ensureAdminUser,
  ensureSecret,
  memcachedPidFile,
  redisMarker,
  sentinelGroupStatus,
  startMariadb,
  startMemcached,
  startRedis,
  startSentinelGroup,
  stopMariadb,
  stopSentinelGroup,
} from './stack/servers.js';

export * from './stack/layout.js';
export * from './stack/packages.js';
export * from './stack/servers.js';

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
