/**
 * A ketama data center's servers change under a steady write load: a fourth server is added,
 * then one of the first three removed. When mcrepl reports each change done, nutcracker
 * configured with the new servers finds every key with its last committed value (or nothing,
 * for a deleted key), and no server holds a key it does not own.
 *
 * Here the change comes from the config (what SIGHUP reloads); the DNS test changes the records
 * a name resolves to.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { ensureReaders } from '../../scripts/stack.js';
import { datacenterSchema } from '../../src/config/schema.js';
import type { DatacenterWorker } from '../../src/sink/datacenter-worker.js';
import { KetamaRing } from '../../src/sink/routes/ketama-ring.js';
import { parseRingServer } from '../../src/config/ring-server.js';
import type { MigrationProgress } from '../../src/sink/membership.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { McreplProcess, mcrepl, writeConfigFile } from '../helpers/cli.js';
import { Dnsmasq } from '../helpers/dns-server.js';
import { PrivateMemcached, freePort } from '../helpers/memcached-server.js';
import { Nutcracker } from '../helpers/readers.js';
import { waitFor } from '../helpers/wait-for.js';

const KEYS = 3_000;
const base = layout.mariadb.port - 6;

/** Writes and deletes keys one statement at a time until stopped; `committed` is "the database". */
export class SteadyWriter {
  readonly committed = new Map<string, string | null>();
  private stopped = false;
  private done: Promise<void> = Promise.resolve();
  statements = 0;

  constructor(
    private readonly env: TestEnv,
    readonly keys: string[],
  ) {}

  async fill(): Promise<void> {
    for (let i = 0; i < this.keys.length; i += 500) {
      await this.env.sql.query('START TRANSACTION');
      for (const k of this.keys.slice(i, i + 500)) await this.env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `${k}=0`]);
      await this.env.sql.query('COMMIT');
      for (const k of this.keys.slice(i, i + 500)) this.committed.set(k, `${k}=0`);
    }
  }

  start(): void {
    this.stopped = false;
    this.done = (async () => {
      for (let n = 1; !this.stopped; n++) {
        const k = this.keys[(n * 7919) % this.keys.length]!;
        if (n % 10 === 0) {
          await this.env.sql.query('CALL delete_key(1, ?)', [k]);
          this.committed.set(k, null);
        } else {
          const v = `${k}=${n}`;
          await this.env.sql.query('CALL set_key(1, ?, ?, 0)', [k, v]);
          this.committed.set(k, v);
        }
        this.statements++;
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

/** Every key through the reader equals its last committed value (nothing for a deleted key). */
export async function readerAgrees(reader: string, committed: Map<string, string | null>): Promise<string[]> {
  const c = new MemcachedTextClient(reader, 10_000);
  const keys = [...committed.keys()];
  const wrong: string[] = [];
  try {
    for (let i = 0; i < keys.length; i += 500) {
      const batch = keys.slice(i, i + 500);
      const got = await c.getEach(batch.map((k) => Buffer.from(k)));
      batch.forEach((k, j) => {
        const want = committed.get(k) ?? null;
        const have = got[j]?.toString() ?? null;
        if (have !== want) wrong.push(`${k}: ${have} instead of ${want}`);
      });
    }
  } finally {
    c.close();
  }
  return wrong;
}

/** Keys found on a server that does not own them under `specs`. */
export async function misplaced(specs: string[], hash: 'fnv1a_64' | 'md5', keys: string[], all: string[]): Promise<string[]> {
  const ring = new KetamaRing(specs.map(parseRingServer), hash);
  const owners = specs.map((s) => parseRingServer(s).address);
  const out: string[] = [];
  for (const address of all) {
    const c = new MemcachedTextClient(address, 10_000);
    try {
      for (let i = 0; i < keys.length; i += 500) {
        const batch = keys.slice(i, i + 500);
        const got = await c.getEach(batch.map((k) => Buffer.from(k)));
        batch.forEach((k, j) => {
          if (got[j] && owners[ring.serverFor(Buffer.from(k))] !== address) out.push(`${k} on ${address}`);
        });
      }
    } finally {
      c.close();
    }
  }
  return out;
}

interface Run {
  env: TestEnv;
  writer: SteadyWriter;
  keys: string[];
  servers: PrivateMemcached[];
  nutcracker: Nutcracker;
}

/**
 * Makes a change of servers while the writer writes (`change` resolves once mcrepl reports it
 * done), then checks it: reported done with the new servers, nutcracker with them finds every
 * key's last value, and no server holds a key it does not own.
 */
async function changeAndCheck(r: Run, label: string, list: string[], change: () => Promise<void>): Promise<void> {
  const progress = async () => JSON.parse((await r.env.redis.get(new RedisKeys(r.env.prefix).migration('east'))) ?? 'null') as MigrationProgress | null;
  const before = r.writer.statements;
  await change();
  const p = await progress();
  assert.equal(p?.phase, 'done', `the change is reported done (${label})`);
  assert.deepEqual([...(p?.to ?? [])].sort(), list.map((s) => parseRingServer(s).address).sort());
  assert.ok(r.writer.statements > before, `writes went on during the change (${r.writer.statements - before})`);
  // Writes go on a little, then stop; what they wrote is applied before the readers look.
  const stopAt = r.writer.statements + 200;
  await waitFor(() => r.writer.statements >= stopAt, { timeoutMs: 30_000, message: 'more writes after the change' });
  await r.writer.stop();
  await r.nutcracker.start({ hash: 'fnv1a_64', servers: list });
  try {
    let wrong: string[] = [];
    await waitFor(async () => (wrong = await readerAgrees(r.nutcracker.address, r.writer.committed)).length === 0, {
      timeoutMs: 30_000,
      intervalMs: 500,
      message: () => `nutcracker finds every key with its last value (${label}): ${wrong.length} do not, e.g. ${wrong.slice(0, 3).join('; ')}`,
    });
  } finally {
    await r.nutcracker.stop();
  }
  assert.deepEqual((await misplaced(list, 'fnv1a_64', r.keys, r.servers.map((s) => s.address))).slice(0, 5), [], `no server holds a key it does not own (${label})`);
  r.writer.start();
}

async function withRun(servers: PrivateMemcached[], east: Record<string, unknown>, nutcrackerPort: number, body: (r: Run, worker: DatacenterWorker) => Promise<void>): Promise<void> {
  ensureReaders();
  await Promise.all(servers.map((s) => s.start()));
  const nutcracker = new Nutcracker(nutcrackerPort, nutcrackerPort + 1, path.join(layout.dir, 'ketama-membership'));
  let env: TestEnv | undefined;
  let writer: SteadyWriter | undefined;
  try {
    env = await createTestEnv({ partitions: 2, overrides: { 'datacenters.east': east } });
    const { workers } = await env.startPipeline();
    await env.sql.query("CALL create_namespace(1, 'members')");
    const keys = Array.from({ length: KEYS }, (_, i) => `${i}:${env!.prefix}:m`);
    writer = new SteadyWriter(env, keys);
    await writer.fill();
    writer.start();
    await body({ env, writer, keys, servers, nutcracker }, workers.find((w) => w.dc === 'east') as DatacenterWorker);
  } finally {
    await writer?.stop();
    await nutcracker.stop();
    await env?.teardown();
    await Promise.all(servers.map((s) => s.stop()));
  }
}

test('a fourth server added, then one removed, under writes (config reload): nutcracker with the new servers finds every key with its last value, and no server holds a key it does not own', { timeout: 240_000 }, async () => {
  const servers = await Promise.all([0, 1, 2, 3].map(() => PrivateMemcached.create()));
  const specs = servers.map((s, i) => `${s.address}:1 cache-${i}`);
  const dcOf = (list: string[]) => datacenterSchema.parse({ routing: 'ketama', hash: 'fnv1a_64', servers: list });
  await withRun(servers, { routing: 'ketama', hash: 'fnv1a_64', servers: specs.slice(0, 3) }, base + 58, async (r, east) => {
    await changeAndCheck(r, 'added', specs, () => east.reconfigure(dcOf(specs)));
    const fewer = [specs[0]!, specs[2]!, specs[3]!];
    await changeAndCheck(r, 'removed', fewer, () => east.reconfigure(dcOf(fewer)));
  });
});

test('a change to a server that never answers waits for it, and gives way to the next change', { timeout: 240_000 }, async () => {
  const servers = await Promise.all([0, 1, 2, 3].map(() => PrivateMemcached.create()));
  const dead = `127.0.0.1:${await freePort()}:1`;
  const specs = servers.map((s) => `${s.address}:1`);
  const dcOf = (list: string[]) => datacenterSchema.parse({ routing: 'ketama', hash: 'fnv1a_64', servers: list });
  await withRun(servers, { routing: 'ketama', hash: 'fnv1a_64', servers: specs.slice(0, 3) }, base + 66, async (r, east) => {
    const stuck = east.reconfigure(dcOf([...specs.slice(0, 3), dead]));
    const keys = new RedisKeys(r.env.prefix);
    await waitFor(async () => (await r.env.redis.hget(keys.servers('east'), dead.slice(0, -2))) !== null, { timeoutMs: 10_000, message: 'the dead server joined (and is down)' });
    await changeAndCheck(r, 'after a change that could not finish', specs, () => east.reconfigure(dcOf(specs)));
    await stuck;
    assert.equal(await r.env.redis.hget(keys.servers('east'), dead.slice(0, -2)), null, 'the server that never answered is forgotten');
  });
});

test('the servers found through DNS (dnsmasq on loopback): a fourth address added to the name, then one removed, under writes', { timeout: 240_000 }, async () => {
  const port = await freePort();
  const servers = [2, 3, 4, 5].map((i) => new PrivateMemcached(port, `127.0.0.${i}`));
  const name = 'pool.mcrepl.test';
  const dns = new Dnsmasq(base + 62, path.join(layout.dir, 'ketama-membership'));
  const ips = servers.map((s) => s.host);
  const specs = (list: string[]) => list.map((ip) => `${ip}:${port}:1`);
  await dns.start(name, ips.slice(0, 3));
  try {
    await withRun(servers, { routing: 'ketama', hash: 'fnv1a_64', discover: { dns: name, port, refreshS: 1, resolver: dns.address } }, base + 60, async (r) => {
      const done = (list: string[]) => async () => {
        const want = JSON.stringify(list.map((ip) => `${ip}:${port}`).sort());
        await waitFor(
          async () => {
            const p = JSON.parse((await r.env.redis.get(new RedisKeys(r.env.prefix).migration('east'))) ?? 'null') as MigrationProgress | null;
            return p?.phase === 'done' && JSON.stringify([...p.to].sort()) === want;
          },
          { timeoutMs: 60_000, intervalMs: 100, message: `the change to ${want} reported done` },
        );
      };
      await changeAndCheck(r, 'added in DNS', specs(ips), async () => {
        await dns.setRecords(name, ips);
        await done(ips)();
      });
      const fewer = [ips[0]!, ips[2]!, ips[3]!];
      await changeAndCheck(r, 'removed from DNS', specs(fewer), async () => {
        await dns.setRecords(name, fewer);
        await done(fewer)();
      });
    });
  } finally {
    await dns.stop();
  }
});

test('mcrepl worker reads its config again on SIGHUP and moves the keys to a fourth server; mcrepl status shows the change', { timeout: 180_000 }, async () => {
  ensureReaders();
  const servers = await Promise.all([0, 1, 2, 3].map(() => PrivateMemcached.create()));
  await Promise.all(servers.map((s) => s.start()));
  const specs = servers.map((s) => `${s.address}:1`);
  const nutcracker = new Nutcracker(base + 64, base + 65, path.join(layout.dir, 'ketama-membership'));
  let env: TestEnv | undefined;
  let worker: McreplProcess | undefined;
  try {
    env = await createTestEnv({ partitions: 2, overrides: { 'datacenters.east': { routing: 'ketama', hash: 'fnv1a_64', servers: specs.slice(0, 3) } } });
    const file = writeConfigFile(env.config);
    worker = new McreplProcess(['-c', file, 'worker', 'east']);
    await worker.waitForOutput(/mcrepl ready/);
    await env.startTailer();
    await env.sql.query("CALL create_namespace(1, 'members')");
    const keys = Array.from({ length: 1_000 }, (_, i) => `${i}:${env!.prefix}:hup`);
    const writer = new SteadyWriter(env, keys);
    await writer.fill();
    writer.start();

    // The same config with a fourth server, then SIGHUP.
    const config = JSON.parse(fs.readFileSync(file, 'utf8')) as { datacenters: { east: { servers: string[] } } };
    config.datacenters.east.servers = specs;
    fs.writeFileSync(file, JSON.stringify(config));
    worker.kill('SIGHUP');
    await worker.waitForOutput(/the change of servers is done/, 60_000);
    await writer.stop();
    const st = await mcrepl(['-c', file, 'status', '--json']);
    const east = (JSON.parse(st.stdout) as { datacenters: { name: string; servers: { address: string }[]; migration: MigrationProgress | null }[] }).datacenters.find((d) => d.name === 'east')!;
    assert.equal(east.migration?.phase, 'done');
    assert.deepEqual(east.servers.map((s) => s.address).sort(), servers.map((s) => s.address).sort(), 'status lists the four servers');
    await nutcracker.start({ hash: 'fnv1a_64', servers: specs });
    try {
      let wrong: string[] = [];
      await waitFor(async () => (wrong = await readerAgrees(nutcracker.address, writer.committed)).length === 0, { timeoutMs: 30_000, intervalMs: 500, message: () => `nutcracker finds every key: ${wrong.slice(0, 3).join('; ')}` });
    } finally {
      await nutcracker.stop();
    }

    // A change under way, as a worker records it, as status shows it.
    worker.kill('SIGTERM');
    await worker.exited;
    worker = undefined;
    const under: MigrationProgress = { from: servers.slice(0, 3).map((s) => s.address), to: servers.map((s) => s.address), phase: 'copying', startedAt: new Date().toISOString(), scanned: 1200, copied: 300, deleted: 0 };
    await env.redis.set(new RedisKeys(env.prefix).migration('east'), JSON.stringify(under));
    const text = await mcrepl(['-c', file, 'status']);
    assert.match(text.stdout, /servers changing \(copying, since [^)]+\): 1200 keys listed, 300 copied to their new servers, 0 deleted where they no longer belong/);
    assert.match(text.stdout, new RegExp(`to +${servers.map((s) => s.address.replace(/\./g, '\\.')).join(', ')}`));
  } finally {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await nutcracker.stop();
    await env?.teardown();
    await Promise.all(servers.map((s) => s.stop()));
  }
});
