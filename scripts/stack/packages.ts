/**
 * Provisioning: the Debian packages the stack, the tests' readers and the monitoring tests need,
 * installed with apt-get when missing (as root), never starting a system service.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { log } from './log.js';

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
