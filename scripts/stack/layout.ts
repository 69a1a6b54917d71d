/** Where the local stack's services live: ports, data directories, pid and log files. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (dist/scripts/stack/layout.js → ../../..). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

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

export const envInt = (name: string, dflt: number): number => {
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

export function hashPath(p: string): string {
  let h = 2166136261;
  for (let i = 0; i < p.length; i++) h = Math.imul(h ^ p.charCodeAt(i), 16777619) >>> 0;
  return h.toString(16);
}

export interface ServiceStatus {
  name: string;
  port: number;
  pid?: number;
}
