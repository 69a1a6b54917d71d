/**
 * Tailer high availability (a standby takes over after kill -9 of the active one; a paused
 * active one that lost its lease stops instead of writing), Redis killed and restarted under
 * load, and a whole data center's memcached out while the other goes on.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { killRedis, startRedis } from '../../scripts/stack.js';
import { Lease } from '../../src/coordination/lease.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { datacenterDepth } from '../../src/fanout/topology.js';
import { McreplProcess, mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';
import { textGet } from '../../scripts/memcached-text.js';

const envs: TestEnv[] = [];
const procs: McreplProcess[] = [];
after(async () => {
  await startRedis(layout);
  for (const p of procs) {
    p.kill('SIGCONT');
    p.kill('SIGKILL');
  }
  for (const e of envs) await e.teardown();
});

async function newEnv(overrides: Record<string, unknown> = {}): Promise<TestEnv> {
  const env = await createTestEnv({ overrides });
  envs.push(env);
  await env.sql.query("CALL create_namespace(1, 'ha')");
  return env;
}

function tailerProcess(configFile: string): McreplProcess {
  const p = new McreplProcess(['-c', configFile, 'tailer']);
  procs.push(p);
  return p;
}

async function allArrive(env: TestEnv, keys: string[], timeoutMs = 20_000): Promise<void> {
  await waitFor(async () => {
    for (const k of keys) if (!(await env.readEverywhere(k)).every((v) => v?.toString() === `v-${k}`)) return false;
    return true;
  }, { timeoutMs, message: `${keys.length} keys everywhere` });
}

describe('tailer high availability', () => {
  test('kill -9 of the active tailer: the standby takes over within the lease time, nothing is lost', async () => {
    const env = await newEnv({ 'tailer.leaseTtlMs': 3_000 });
    await env.startWorkers();
    const configFile = writeConfigFile(env.config);
    const a = tailerProcess(configFile);
    await a.waitForOutput(/"msg":"mcrepl ready"/);
    const b = tailerProcess(configFile);
    await b.waitForOutput(/waiting for the lease held by another process/);
    const keys: string[] = [];
    const write = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const k = env.key('ha');
        keys.push(k);
        await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
      }
    };
    await write(200);
    a.kill('SIGKILL');
    const killedAt = Date.now();
    await write(200); // written while no tailer is active
    await b.waitForOutput(/"msg":"mcrepl ready"/, 10_000);
    const takeover = Date.now() - killedAt;
    assert.ok(takeover <= 3_000 + 1_500, `standby active ${takeover} ms after the kill (lease 3000 ms)`);
    await write(200);
    await allArrive(env, keys);
    b.kill('SIGTERM');
    assert.equal((await b.exited).code, 0);
  });

  test('an active tailer paused past its lease stops instead of writing once it wakes (fencing)', async () => {
    const env = await newEnv({ 'tailer.leaseTtlMs': 3_000 });
    await env.startWorkers();
    const configFile = writeConfigFile(env.config);
    const keys = new RedisKeys(env.prefix);
    const a = tailerProcess(configFile);
    await a.waitForOutput(/"msg":"mcrepl ready"/);
    const b = tailerProcess(configFile);
    await b.waitForOutput(/waiting for the lease held by another process/);
    a.kill('SIGSTOP');
    await b.waitForOutput(/"msg":"mcrepl ready"/, 10_000);
    const written: string[] = [];
    for (let i = 0; i < 50; i++) {
      const k = env.key('fenced');
      written.push(k);
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
    }
    await allArrive(env, written);
    const cpBefore = await env.redis.get(keys.checkpoint);
    a.kill('SIGCONT');
    // It notices it lost the lease before writing anything, and goes back to standing by.
    await a.waitForOutput(/lost the lease/);
    await a.waitForOutput(/component failed for a passing reason: replacing it/);
    await a.waitForOutput(/waiting for the lease held by another process/);
    // It wrote nothing: the checkpoint is still B's, and B still holds the lease.
    const holder = await Lease.holder(env.redis, keys.tailerLease);
    const bOwner = /"owner":"([^"]+)","msg":"lease acquired"/.exec(b.stdout)?.[1];
    assert.ok(bOwner && holder === bOwner, `B holds the lease (holder ${holder}, B ${bOwner})`);
    const cpAfter = await env.redis.get(keys.checkpoint);
    assert.ok(cpAfter && cpBefore, 'checkpoint present');
    assert.ok(JSON.parse(cpAfter).txnSeq >= JSON.parse(cpBefore).txnSeq, 'never moved back by the stale tailer');
    b.kill('SIGTERM');
    assert.equal((await b.exited).code, 0);
    // ...and takes over once B is gone.
    await waitFor(() => (a.stdout.match(/"msg":"tailer running"/g) ?? []).length >= 2, { message: 'A active again' });
    a.kill('SIGTERM');
    assert.equal((await a.exited).code, 0);
  });
});

describe('Redis killed and restarted', () => {
  test('under a stream of writes, the tailer and the workers carry on by themselves; nothing is lost', async () => {
    // Leases long enough to outlive the outage (in production, 10 s by default).
    const env = await newEnv({ 'tailer.leaseTtlMs': 10_000, 'worker.leaseTtlMs': 10_000 });
    await env.startPipeline();
    const keys: string[] = [];
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const k = env.key('redis');
        await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
        keys.push(k);
      }
    })();
    await waitFor(() => keys.length >= 200, { message: 'writes flowing' });
    await killRedis(layout);
    await waitFor(() => keys.length >= 400, { message: 'writes while Redis is down' });
    await startRedis(layout);
    await waitFor(() => keys.length >= 800, { message: 'writes after' });
    stop = true;
    await writer;
    await allArrive(env, keys, 30_000);
  });
});

describe('Lua scripts by SHA', () => {
  test('a fenced script still runs after Redis forgot its scripts (SCRIPT FLUSH, as after a restart)', async () => {
    const env = await newEnv();
    const lease = new Lease(env.redis, `${env.prefix}:lease:scripts`, 5_000, env.logger);
    await lease.acquire();
    const key = `${env.prefix}:scripted`;
    const script = `redis.call('SET', KEYS[2], ARGV[2]) return 1`;
    assert.equal(await lease.fenced(script, [key], ['a']), 1);
    await env.redis.script('FLUSH');
    assert.equal(await lease.fenced(script, [key], ['b']), 1);
    assert.equal(await env.redis.get(key), 'b');
    await lease.release();
  });
});

describe('a whole data center down', () => {
  test('only its queues grow while its memcached are out; it catches up in order when they are back', async () => {
    const [m1, m2] = [await PrivateMemcached.create(), await PrivateMemcached.create()];
    await m1.start();
    await m2.start();
    try {
      const env = await newEnv({ 'datacenters.east': { servers: [m1.address, m2.address] } });
      await env.startPipeline();
      const hot = env.key('hot');
      m1.pause();
      m2.pause();
      const keys: string[] = [];
      for (let i = 0; i < 300; i++) {
        const k = env.key('dcdown');
        keys.push(k);
        await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
        await env.sql.query('CALL set_key(1, ?, ?, 0)', [hot, String(i)]);
      }
      // West is not held back.
      const west = env.config.datacenters.west!.servers;
      await waitFor(async () => (await Promise.all(west.map((s) => textGet(s, hot)))).every((v) => v?.toString() === '299'), { message: 'west up to date' });
      const depth = await datacenterDepth(env.redis, new RedisKeys(env.prefix), 'east', env.config.partitions);
      assert.ok(depth.waiting + depth.active > 0, 'east jobs wait in its queues');
      // `mcrepl status` shows the backlog, the memory it holds, and the servers' state (once the
      // worker group's writes have timed out: a condition, polled).
      type EastReport = { name: string; queued: { waiting: number }; redisBytes: number; servers: { health: string }[] };
      let east: EastReport | undefined;
      const configFile = writeConfigFile(env.config);
      await waitFor(
        async () => {
          const st = await mcrepl(['-c', configFile, 'status', '--json']);
          east = (JSON.parse(st.stdout) as { datacenters: EastReport[] }).datacenters.find((d) => d.name === 'east')!;
          return east.queued.waiting > 0 && east.redisBytes > 0 && east.servers.every((s) => s.health !== 'healthy');
        },
        { timeoutMs: 15_000, message: () => `status to show east's backlog, its memory and its servers down: ${JSON.stringify(east)}` },
      );
      m1.resume();
      m2.resume();
      await allArrive(env, keys, 30_000);
      await waitFor(async () => (await env.readEverywhere(hot)).every((v) => v?.toString() === '299'), { message: 'east caught up to the last value' });
    } finally {
      await m1.stop();
      await m2.stop();
    }
  });
});
