/**
 * Data-center workers under faults: a server that is down or hangs, a server that refuses an op
 * for good, and a worker group that dies (SIGTERM or kill -9) in the middle of a job.
 */
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import type { DeadLetter } from '../../src/fanout/dead-letters.js';
import { partitionOf } from '../../src/fanout/partitioner.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { queueDepth } from '../../src/fanout/topology.js';
import { Queue, Worker } from 'bullmq';
import { encodeJob } from '../../src/fanout/job-codec.js';
import { DatacenterWorker, serverStateOf } from '../../src/sink/datacenter-worker.js';
import { MemcachedTextClient, textGet } from '../../scripts/memcached-text.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const stackServer = (name: string) => `127.0.0.1:${layout.memcached.find((m) => m.name === name)!.port}`;

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
});
after(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
});

/** One partition, namespace 1 ('faults'), torn down after the test. */
async function faultsEnv(overrides: Record<string, unknown> = {}): Promise<TestEnv> {
  const env = await createTestEnv({ partitions: 1, overrides });
  cleanup.push(() => env.teardown());
  await env.sql.query("CALL create_namespace(1, 'faults')");
  return env;
}

/** East = the stack's east-1 and `server`, or exactly `servers` when given a list. */
async function envWith(server: PrivateMemcached | PrivateMemcached[], overrides: Record<string, unknown> = {}): Promise<TestEnv> {
  const east = Array.isArray(server) ? server.map((m) => m.address) : [stackServer('east-1'), server.address];
  return faultsEnv({ 'datacenters.east': { servers: east }, 'worker.shutdownGraceMs': 500, ...overrides });
}

/** East's queue, to put jobs in by hand (closed after the test). */
function eastQueue(env: TestEnv): { keys: RedisKeys; q: Queue } {
  const keys = new RedisKeys(env.prefix);
  const q = new Queue(keys.queueName('east', 0), { connection: env.redis, prefix: env.prefix });
  cleanup.push(() => q.close());
  return { keys, q };
}

async function memcachedStats(address: string): Promise<Record<string, string>> {
  const c = new MemcachedTextClient(address, 2_000);
  try {
    return await c.stats();
  } finally {
    c.close();
  }
}

const onServer = async (address: string, key: string, want: string | null) => ((await textGet(address, key))?.toString() ?? null) === want;

describe('a memcached server that is down', () => {
  test('a paused server that works through old buffered writes late (after any settle window) still ends with the last value', async () => {
    // The worker reaches `late` through a proxy that can hold back what is sent on the
    // connections open now and deliver it later: memcached working through its old socket
    // buffer after everything sent on newer connections. No settle window to hide behind.
    const late = await PrivateMemcached.create();
    cleanup.push(() => late.stop());
    await late.start();
    const proxy = new TcpProxy(late.port);
    await proxy.start();
    cleanup.push(() => proxy.close());
    const via = `127.0.0.1:${proxy.port}`;
    const env = await faultsEnv({ 'datacenters.east': { servers: [stackServer('east-1'), via] }, 'worker.settleMs': 0, 'memcached.timeoutMs': 300 });
    const keys = new RedisKeys(env.prefix);
    await env.startPipeline();
    const k = env.key('late');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v1']);
    await waitFor(() => onServer(late.address, k, 'v1'), { message: 'v1 everywhere' });

    assert.ok(proxy.hold() >= 1, "the worker's connection is held");
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v2']);
    // v2 went out on the held connection and timed out: kept for the server, which is down.
    await waitFor(async () => (await env.redis.hlen(keys.missed('east', via))) === 1, { message: 'v2 kept for the server' });
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v3']);
    await waitFor(() => onServer(stackServer('east-1'), k, 'v3'), { message: 'v3 on its peer' });
    const setsBefore = Number((await memcachedStats(late.address)).cmd_set);

    // The old bytes (v2) reach the server now, after v3 was applied elsewhere.
    proxy.release();
    await waitFor(
      async () =>
        Number((await memcachedStats(late.address)).cmd_set) > setsBefore &&
        serverStateOf((await env.redis.hget(keys.servers('east'), via)) ?? undefined)?.health === 'healthy' &&
        (await env.redis.hlen(keys.missed('east', via))) === 0,
      { timeoutMs: 10_000, message: 'the held write processed, the server healthy again with nothing kept' },
    );
    assert.equal((await textGet(late.address, k))?.toString(), 'v3', 'the last value, not the one that arrived late');
  });

  test('the other servers go on at once; its missed ops are kept and replayed, last value per key, when it is back', async () => {
    const down = await PrivateMemcached.create();
    cleanup.push(() => down.stop());
    const env = await envWith(down);
    await env.startPipeline();
    const k = env.key('while-down');
    for (const v of ['1', '2', '3']) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, v]);
    // No added lag for the healthy server of the same data center, nor for the other one.
    await waitFor(async () => (await onServer(stackServer('east-1'), k, '3')) && (await onServer(stackServer('west-1'), k, '3')), { timeoutMs: 3_000, message: 'east-1 and west' });
    const keys = new RedisKeys(env.prefix);
    assert.equal(await env.redis.hlen(keys.missed('east', down.address)), 1, 'one key kept (coalesced) for the down server');
    await down.start();
    await waitFor(() => onServer(down.address, k, '3'), { timeoutMs: 10_000, message: 'the returning server gets the last value' });
    await waitFor(async () => (await env.redis.hlen(keys.missed('east', down.address))) === 0, { message: 'nothing left kept' });
    const k2 = env.key('after');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k2, 'x']);
    await waitFor(() => onServer(down.address, k2, 'x'), { message: 'and it is written directly again' });
  });

  test('a server that restarts empty is warmed from its healthy peer before it counts as healthy', async () => {
    const m = await PrivateMemcached.create();
    cleanup.push(() => m.stop());
    await m.start();
    const env = await envWith(m);
    await env.startPipeline();
    const before = Array.from({ length: 50 }, () => env.key('before'));
    for (const k of before) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
    await waitFor(async () => {
      for (const k of before) if (!(await onServer(m.address, k, `v-${k}`))) return false;
      return true;
    }, { message: 'all on the server' });
    // kill -9 and restart: it comes back empty.
    await m.stop();
    const during = env.key('during');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [during, 'd']);
    await m.start();
    await waitFor(() => onServer(m.address, during, 'd'), { timeoutMs: 10_000, message: 'the op written after the restart' });
    // The keys written before the restart come back only by being copied from east-1.
    await waitFor(async () => {
      for (const k of before) if (!(await onServer(m.address, k, `v-${k}`))) return false;
      return true;
    }, { timeoutMs: 10_000, message: 'the keys written before the restart, warmed from the peer' });
    assert.ok(await onServer(m.address, during, 'd'), 'and the warm did not undo the newer write');
  });

  test('a server restarted empty while its only peer hangs waits for that peer and warms from it; the peer restarting later is warmed back', async () => {
    // The chaos run's sequence: with the whole data center paused, one server is killed and
    // restarted empty; the data center resumes; later the other server is killed too. The keys
    // must survive on one of them at every step.
    const a = await PrivateMemcached.create();
    const b = await PrivateMemcached.create();
    cleanup.push(() => a.stop(), () => b.stop());
    await a.start();
    await b.start();
    // A restart is noticed within 4 probe intervals (400 ms) rather than the default 2 s.
    const env = await envWith([a, b], { 'memcached.timeoutMs': 300, 'worker.probeIntervalMs': 100 });
    await env.startPipeline();
    const before = Array.from({ length: 50 }, () => env.key('before'));
    for (const k of before) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
    const allOn = async (address: string) => {
      for (const k of before) if (!(await onServer(address, k, `v-${k}`))) return false;
      return true;
    };
    await waitFor(async () => (await allOn(a.address)) && (await allOn(b.address)), { message: 'all on both servers' });
    b.pause();
    await a.stop();
    await a.start(); // empty, while b hangs
    const during = env.key('during');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [during, 'd']);
    // a is back, and the worker has noticed that it restarted, while b still hangs.
    await waitFor(async () => serverStateOf((await env.redis.hget(new RedisKeys(env.prefix).servers('east'), a.address)) ?? undefined)?.health !== 'healthy', {
      timeoutMs: 5_000,
      message: "the worker to notice a's restart",
    });
    b.resume();
    await waitFor(() => allOn(a.address), { timeoutMs: 10_000, message: 'the keys written before the restart, warmed from b once b answers' });
    await waitFor(() => onServer(a.address, during, 'd'), { timeoutMs: 10_000, message: 'and the op written meanwhile' });
    await b.stop();
    await b.start(); // now b is empty: only a holds the keys
    await waitFor(() => allOn(b.address), { timeoutMs: 10_000, message: 'b warmed from a' });
    assert.ok(await onServer(b.address, during, 'd'));
  });

  test('more missed ops than the bound: the server is flushed and warmed on return, so no old value survives', async () => {
    const m = await PrivateMemcached.create();
    cleanup.push(() => m.stop());
    await m.start();
    const env = await envWith(m, { 'worker.missedOpsMaxKeys': 5 });
    await env.startPipeline();
    const stale = env.key('stale');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [stale, 'old']);
    await waitFor(() => onServer(m.address, stale, 'old'), { message: 'old value on it' });
    m.pause();
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [stale, 'new']);
    for (let i = 0; i < 10; i++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('filler'), 'f']);
    await waitFor(() => onServer(stackServer('east-1'), stale, 'new'), { message: 'east-1 has the new value' });
    m.resume();
    await waitFor(() => onServer(m.address, stale, 'new'), { timeoutMs: 10_000, message: 'the new value, not the old one' });
  });

  test('a server that hangs (SIGSTOP) longer than the client timeout is retried until it answers', async () => {
    const hung = await PrivateMemcached.create();
    cleanup.push(() => hung.stop());
    await hung.start();
    const env = await envWith(hung, { 'memcached.timeoutMs': 300 });
    await env.startPipeline();
    hung.pause();
    const k = env.key('hung');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'after-hang']);
    await waitFor(() => onServer(stackServer('east-1'), k, 'after-hang'), { message: 'east-1' });
    await waitFor(() => onServer(stackServer('west-2'), k, 'after-hang'), { message: 'west-2' });
    hung.resume();
    await waitFor(() => onServer(hung.address, k, 'after-hang'), { timeoutMs: 10_000, message: 'the hung server after it resumes' });
  });
});

describe('an op a server refuses for good', () => {
  test('is dead-lettered with the server and reason, and the partition goes on', async () => {
    const small = await PrivateMemcached.create();
    cleanup.push(() => small.stop());
    await small.start();
    // mcrepl believes items may be 2 MB; the servers keep the default 1 MB.
    const env = await envWith(small, { 'memcached.maxItemBytes': 2 * 1024 * 1024 });
    await env.root.query("UPDATE mc_settings SET value = '2097152' WHERE name = 'max_item_bytes'");
    await env.startPipeline();
    const big = env.key('too-big');
    const next = env.key('next');
    assert.equal(partitionOf(Buffer.from(big), 1), partitionOf(Buffer.from(next), 1));
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [big, 'old']);
    await waitFor(async () => (await env.readEverywhere(big)).every((v) => v?.toString() === 'old'), { message: 'the old value everywhere' });
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [big, Buffer.alloc(1_500_000, 0x62)]);
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [next, 'next']);
    await waitFor(async () => (await env.readEverywhere(next)).every((v) => v?.toString() === 'next'), { message: 'the op after it, everywhere' });
    // One per server: each refused it. (A server records its refusal after the whole job's
    // replies are in, so `next` can be visible on it a moment before.)
    const deadLetters = async () => (await env.redis.lrange(new RedisKeys(env.prefix).deadLetters, 0, -1)).map((r) => JSON.parse(r) as DeadLetter);
    await waitFor(async () => (await deadLetters()).length >= env.servers.length, { message: 'a dead letter from every server' });
    const dls = await deadLetters();
    assert.equal(dls.length, env.servers.length, JSON.stringify(dls, null, 1));
    assert.deepEqual(dls.map((d) => d.server).sort(), [...env.servers].sort());
    for (const d of dls) {
      assert.equal(d.stage, 'worker');
      assert.match(d.reason, /too large/i);
      assert.equal(d.op.key, big);
      assert.ok(d.dc && d.server);
      assert.equal(d.action, 'key deleted on this server instead');
    }
    // No server keeps serving the value the refused set was meant to replace.
    assert.deepEqual(await env.readEverywhere(big), [null, null, null, null]);
  });
});

describe('a job that cannot be read', () => {
  test('is dead-lettered and the partition goes on; an unknown format version stops the group instead', async () => {
    const env = await faultsEnv();
    const { keys, q } = eastQueue(env);
    // Queued ahead of real work: a damaged payload, and a reference to a payload that is gone.
    await q.add('ops', { v: 1, e: 'x', n: 1, b: Buffer.from([1, 0, 0]).toString('base64') });
    await q.add('ops', { v: 2, e: 'x', n: 1, p: 'x:0:1:1', lt: 1 });
    await env.startPipeline();
    const k = env.key('after-corrupt');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'ok']);
    await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'ok'), { message: 'the op after the corrupt job' });
    const dls = (await env.redis.lrange(keys.deadLetters, 0, -1)).map((r) => JSON.parse(r) as DeadLetter);
    assert.equal(dls.length, 2);
    assert.ok(dls.every((d) => d.dc === 'east'));
    assert.match(dls[1]!.reason, /^corrupt job payload: truncated op/);
    assert.match(dls[0]!.reason, /^corrupt job payload: its ops \(mct-[0-9a-f]+:payload:x:0:1:1\) are gone from Redis/);
    await env.stopPipeline();

    // A job from a newer tailer: the group stops loudly rather than drop its ops.
    await q.add('ops', { v: 99, e: 'x', n: 0, b: '' });
    const w = await env.startWorker('east');
    const fatal = await new Promise<Error>((resolve) => w.once('fatal', resolve));
    assert.match(fatal.message, /job format 99 is not understood by this worker \(expects 1 or 2\); upgrade the workers/);
    assert.equal((await queueDepth(env.redis, keys, 'east', 0)).active, 1, 'the job stays for an upgraded worker');
  });
});

describe('coalescing', () => {
  test("the tailer's jobs say their ops are coalesced; a job that does not is coalesced by the worker (last op per key wins)", async () => {
    const env = await faultsEnv();
    const { keys, q } = eastQueue(env);
    await env.startTailer();
    const k = env.key('coalesced');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v1']);
    await waitFor(async () => (await q.getWaiting()).length > 0, { message: "the tailer's job" });
    const [job] = await q.getWaiting();
    assert.equal(job!.data.c, 1);
    await env.stopPipeline();

    // A job without the mark (written by hand here) with two ops on one key, the older last
    // in the worker's hands if it did not coalesce: only the last op may be applied.
    const u = env.key('uncoalesced');
    const op = (t: number, value: string) => ({ kind: 'set' as const, t, nsId: 1, key: Buffer.from(u), value: Buffer.from(value), expiresAt: 0 });
    const data = encodeJob('hand', [op(1, 'old'), op(2, 'new')]);
    assert.equal(data.c, undefined);
    await q.add('ops', data);
    await env.startWorker('east');
    await waitFor(async () => (await env.readEverywhere(k)).slice(0, 2).every((v) => v?.toString() === 'v1'), { message: "the tailer's job applied" });
    await waitFor(async () => (await env.readEverywhere(u)).slice(0, 2).every((v) => v?.toString() === 'new'), { message: 'the hand-made job applied' });
  });
});

describe('starting and stopping', () => {
  test('a worker group closed while it is still finishing an unfinished job stops promptly, leaving the job', async () => {
    const down = await PrivateMemcached.create(); // never started: the data center has no server up
    cleanup.push(() => down.stop());
    const env = await envWith([down]);
    const { keys, q } = eastQueue(env);
    // A job left active by a "dead" consumer: fetched with a lock and never completed.
    await q.add('ops', encodeJob('e', [{ kind: 'set', t: 1, nsId: 1, key: Buffer.from(env.key('orphan')), value: Buffer.from('v'), expiresAt: 0 }]));
    const thief = new Worker(keys.queueName('east', 0), null, { connection: env.redis, prefix: env.prefix, lockDuration: 60_000 });
    cleanup.push(() => thief.close(true));
    assert.ok(await thief.getNextJob('dead-token'));
    await thief.close(true);

    const w = new DatacenterWorker(env.config, 'east', { logger: env.logger });
    const starting = w.start();
    starting.catch(() => undefined); // it rejects when closed; asserted below
    await waitFor(() => w.state === 'starting', { message: 'recovering the unfinished job' });
    await new Promise((r) => setTimeout(r, 300)); // let it retry against the dead server a few times
    const t0 = Date.now();
    await w.close();
    await assert.rejects(starting);
    assert.ok(Date.now() - t0 < 5_000, 'close() returns promptly');
    assert.equal(w.state, 'stopped');
    assert.equal((await queueDepth(env.redis, keys, 'east', 0)).active, 1, 'the job is left for the next start');
  });

  test('a worker group configured with another partition count than the tailer refuses to start', async () => {
    const env = await createTestEnv({ partitions: 4 });
    cleanup.push(() => env.teardown());
    await env.startTailer();
    const other = structuredClone(env.config);
    other.partitions = 8;
    const w = new DatacenterWorker(other, 'east', { logger: env.logger });
    await assert.rejects(w.start(), /the tailer fans out to 4 partitions but this worker group is configured with partitions=8/);
  });
});

describe('a worker group that dies in the middle of a job', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    test(`${signal}: the ops it kept for down servers and its unfinished job survive it, in order`, async () => {
      const [m1, m2] = [await PrivateMemcached.create(), await PrivateMemcached.create()];
      cleanup.push(() => m1.stop(), () => m2.stop());
      await m1.start();
      await m2.start();
      // East is only these two servers, so that with both stuck, its jobs wait.
      const env = await envWith([m1, m2], { 'memcached.timeoutMs': 300 });
      const keys = new RedisKeys(env.prefix);
      await env.startWorker('west');
      await env.startTailer();
      const configFile = writeConfigFile(env.config);
      let worker = new McreplProcess(['-c', configFile, 'worker', 'east']);
      cleanup.push(async () => worker.kill('SIGKILL'));
      await worker.waitForOutput(/"msg":"mcrepl ready"/);

      m1.pause();
      m2.pause();
      const [k1, k2] = [env.key('k1'), env.key('k2')];
      // One transaction, one job: both servers time out on it, so it is kept for both (in Redis).
      await env.sql.query('START TRANSACTION');
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k1, 'v1']);
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k2, 'only-here']);
      await env.sql.query('COMMIT');
      await waitFor(async () => (await env.redis.hlen(keys.missed('east', m1.address))) === 2 && (await env.redis.hlen(keys.missed('east', m2.address))) === 2, {
        message: 'the job kept for both servers',
      });
      // The next job finds no healthy server: it waits, active, in its queue.
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k1, 'v2']);
      await waitFor(async () => (await queueDepth(env.redis, keys, 'east', 0)).active === 1, { message: 'the newer job waiting, active' });

      worker.kill(signal);
      const exit = await worker.exited;
      if (signal === 'SIGTERM') assert.equal(exit.code, 0, worker.stderr);
      assert.equal((await queueDepth(env.redis, keys, 'east', 0)).active, 1, 'the unfinished job is left active, not failed or completed');
      m1.resume();
      m2.resume();

      worker = new McreplProcess(['-c', configFile, 'worker', 'east']);
      await worker.waitForOutput(/resuming a job left unfinished/);
      for (const m of [m1, m2]) {
        await waitFor(() => onServer(m.address, k1, 'v2'), { message: `${m.address}: k1 at its last value` });
        assert.ok(await onServer(m.address, k2, 'only-here'), `${m.address}: the op kept for it was not lost`);
      }
      await worker.waitForOutput(/"msg":"mcrepl ready"/);
      assert.deepEqual(await queueDepth(env.redis, keys, 'east', 0), { waiting: 0, active: 0, delayed: 0, failed: 0 });
      assert.equal(await env.redis.hlen(keys.missed('east', m1.address)), 0);
      worker.kill('SIGTERM');
      assert.equal((await worker.exited).code, 0);
    });
  }
});
