/**
 * Redis Sentinel: kill -9 of the Redis primary under a stream of writes. The sentinels promote
 * the replica; the tailer and both worker groups (real `mcrepl` processes, never restarted)
 * follow it by themselves, the tailer replays from the checkpoint the promoted replica kept, a
 * `mcrepl flush` started while the primary is down completes, `mcrepl status` names the new
 * primary, and every key ends right on every memcached server (divergent keys: 0), checked
 * against the key registry in MySQL with a plain memcached client.
 *
 * The test runs its own primary, replica and three sentinels (ports base+85..89, data under the
 * stack's folder), and stops them by PID.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { check } from '../../scripts/harness.js';
import type { RowDataPacket } from 'mysql2/promise';
import { killRedisNode, redisNodePid, sentinelGroup, sentinelPrimaryPort, startSentinelGroup, stopSentinelGroup } from '../../scripts/stack.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { McreplProcess, mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, waitForFlush, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

const base = layout.redis.port - 79;
const group = sentinelGroup(
  path.join(layout.dir, 'redis-sentinel-test'),
  'mcrepl-test',
  { primary: base + 85, replica: base + 86, sentinels: [base + 87, base + 88, base + 89] },
  // A silent primary counts as down after 1.5 s (production: a few seconds).
  { downAfterMs: 1_500 },
);
let env: TestEnv | undefined;
const procs: McreplProcess[] = [];

before(async () => {
  fs.rmSync(group.dir, { recursive: true, force: true });
  await startSentinelGroup(group, layout.secretsDir, { primary: true });
  env = await createTestEnv({
    overrides: {
      'redis.sentinel': { name: group.name, nodes: group.sentinels.map((s) => `127.0.0.1:${s.port}`), passwordFile: path.join(layout.secretsDir, 'redis-sentinel') },
      // Leases that outlive the failover (a holder keeps its lease through an outage of a third
      // of the TTL at least), so the components carry on and rewind rather than being replaced.
      'tailer.leaseTtlMs': 20_000,
      'worker.leaseTtlMs': 20_000,
    },
  });
  await env.sql.query("CALL create_namespace(1, 'kept')");
  await env.sql.query("CALL create_namespace(2, 'flushed')");
  await env.sql.query("CALL create_namespace(3, 'flushed-before')");
});

after(async () => {
  const replica = redisNodePid(group.replica);
  if (replica !== undefined) process.kill(replica, 'SIGCONT');
  for (const p of procs) p.kill('SIGKILL');
  await env?.teardown();
  await stopSentinelGroup(group, { primary: true });
});

function start(configFile: string, ...args: string[]): McreplProcess {
  const p = new McreplProcess(['-c', configFile, ...args]);
  procs.push(p);
  return p;
}

test('kill -9 of the Redis primary under load: the replica is promoted, every process follows, nothing is lost or stale', { timeout: 90_000 }, async () => {
  const e = env!;
  const keys = new RedisKeys(e.prefix);
  assert.ok(e.config.redis.sentinel, 'the config goes through the sentinels');
  assert.equal(await sentinelPrimaryPort(group, layout.secretsDir), group.primary.port);
  const configFile = writeConfigFile(e.config);
  const east = start(configFile, 'worker', 'east');
  const west = start(configFile, 'worker', 'west');
  const tailer = start(configFile, 'tailer');
  for (const p of [east, west, tailer]) await p.waitForOutput(/"msg":"mcrepl ready"/);

  // Namespaces 2 and 3: keys that flushes around the failover must remove everywhere.
  const flushed: string[] = [];
  for (const ns of [2, 3]) {
    for (let i = 0; i < 100; i++) {
      const k = e.key(`ns${ns}`);
      flushed.push(k);
      await e.sql.query(`CALL set_key(${ns}, ?, ?, 0)`, [k, `f-${i}`]);
    }
  }
  await waitFor(async () => (await e.readEverywhere(flushed[flushed.length - 1]!)).every((v) => v !== null), { message: 'namespaces 2 and 3 everywhere' });

  // Namespace 1: sets, overwrites and deletes of 300 keys, one statement after the other.
  const universe = Array.from({ length: 300 }, () => e.key('ns1'));
  let writes = 0;
  let stop = false;
  let seq = 0;
  const writer = (async () => {
    while (!stop) {
      const k = universe[Math.floor(Math.random() * universe.length)]!;
      if (Math.random() < 0.2) await e.sql.query('CALL delete_key(1, ?)', [k]);
      else await e.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${++seq}`]);
      writes++;
    }
  })();
  const txnSeqOnPrimary = async () => (JSON.parse((await e.redis.get(keys.checkpoint)) ?? '{"txnSeq":0}') as { txnSeq: number }).txnSeq;
  const replicaPid = redisNodePid(group.replica)!;
  let failoverMs = 0;
  let lastTxnSeqOnOldPrimary = 0;
  let flush: McreplProcess | undefined;
  let flush3: { flush_id: number; token: string } | undefined;
  try {
    await waitFor(() => writes >= 300, { message: 'writes flowing' });

    // The replica stops reading for a moment, and 24 MB written to the primary fill the socket
    // buffers between them: what the primary acknowledges after that (jobs, checkpoints,
    // watermarks, the records of a completed flush) stays in its own output buffer and dies
    // with it, as when replication lags behind at the moment the primary's machine fails.
    process.kill(replicaPid, 'SIGSTOP');
    await e.redis.set(`${e.prefix}:ballast`, Buffer.alloc(24 << 20, 0x78));
    const stoppedAt = await txnSeqOnPrimary();
    const [res] = await e.sql.query<RowDataPacket[][]>('CALL flush_namespace(3)');
    flush3 = res[0]![0] as { flush_id: number; token: string };
    await waitForFlush(e, flush3);
    await waitFor(async () => (lastTxnSeqOnOldPrimary = await txnSeqOnPrimary()) >= stoppedAt + 50, { message: 'the checkpoint moving on the primary alone' });

    await killRedisNode(group.primary);
    const killedAt = Date.now();
    process.kill(replicaPid, 'SIGCONT');
    const writesAtKill = writes;
    // Started while the primary is down: it waits for the failover, then for the workers.
    flush = start(configFile, 'flush', 'flushed', '--timeout', '60');

    await waitFor(async () => (await sentinelPrimaryPort(group, layout.secretsDir)) === group.replica.port, { timeoutMs: 30_000, message: 'the sentinels to promote the replica' });
    failoverMs = Date.now() - killedAt;
    // The tailer saw another Redis answer and replayed from the (older) checkpoint that one
    // kept; each worker group finished first the jobs that Redis lists as unfinished.
    await tailer.waitForOutput(/Redis restarted or failed over \(another run_id answers\)/, 20_000);
    await tailer.waitForOutput(/replaying from the checkpoint it kept/, 20_000);
    for (const w of [east, west]) await w.waitForOutput(/Redis changed: finishing the jobs it lists as unfinished/, 20_000);
    await waitFor(() => writes >= writesAtKill + 600, { timeoutMs: 30_000, message: 'writes after the failover' });
  } finally {
    process.kill(replicaPid, 'SIGCONT');
    stop = true;
    await writer.catch(() => undefined);
  }

  const replayedFrom = Number(/"txnSeq":(\d+),"msg":"Redis restarted or failed over: replaying/.exec(tailer.stdout)?.[1]);
  assert.ok(replayedFrom < lastTxnSeqOnOldPrimary, `the promoted replica lacked the last checkpoints (replayed from #${replayedFrom}; the old primary had #${lastTxnSeqOnOldPrimary})`);
  // The flush reported done before the crash is recorded done again (its records were lost).
  await waitForFlush(e, flush3!, 20_000);
  const flushRun = await flush!.exited;
  assert.equal(flushRun.code, 0, `flush completed across the failover:\n${flush!.stdout}\n${flush!.stderr}`);
  assert.match(flush!.stdout, /namespace 'flushed' flushed in every data center/);

  // Every key of every namespace, on every server, as the registry in MySQL says.
  const admin = { host: e.config.mysql.host, port: e.config.mysql.port, user: e.config.mysql.user, password: e.config.mysql.password ?? '', database: e.database };
  let divergent = -1;
  let sample = '';
  await waitFor(async () => {
    const r = await check(admin, e.servers, [...universe, ...flushed]);
    divergent = r.divergent.size;
    sample = JSON.stringify([...r.divergent.values()].slice(0, 3));
    return divergent === 0;
  }, { timeoutMs: 30_000, message: () => `divergent keys: ${divergent} (${sample})` });

  // `mcrepl status` reaches the new primary through the sentinels and sees everyone active.
  const st = await mcrepl(['-c', configFile, 'status', '--json']);
  assert.equal(st.code, 0, st.stderr);
  const report = JSON.parse(st.stdout) as { redis: { server: string; role: string; sentinelName: string }; tailer: string | null; datacenters: { worker: string | null }[] };
  assert.equal(report.redis.server, `127.0.0.1:${group.replica.port}`);
  assert.equal(report.redis.role, 'master');
  assert.equal(report.redis.sentinelName, group.name);
  assert.ok(report.tailer && report.datacenters.every((d) => d.worker), JSON.stringify(report));
  const text = await mcrepl(['-c', configFile, 'status']);
  assert.match(text.stdout, new RegExp(`^redis +127\\.0\\.0\\.1:${group.replica.port} \\(primary of '${group.name}' per Sentinel`, 'm'));

  // The same processes all along (none exited), and each stops cleanly.
  for (const p of [tailer, east, west]) {
    p.kill('SIGTERM');
    assert.equal((await p.exited).code, 0, p.stdout.slice(-2000));
  }
  process.stderr.write(`# failover seen by the sentinels ${failoverMs} ms after the kill; replayed from #${replayedFrom} (old primary at #${lastTxnSeqOnOldPrimary}); ${writes} writes\n`);
});
