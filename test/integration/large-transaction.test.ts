/**
 * A transaction of any size: one INSERT ... SELECT of 100,000 rows streams through the tailer in
 * chunks (never held whole), staged in Redis until its end, and is applied everywhere, also with
 * a memcached server down while it is applied and the data center's worker group killed
 * (SIGKILL) in the middle. A large transaction that ends in ROLLBACK leaves nothing behind.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, test } from 'node:test';
import { mysqlFor } from '../../src/registry/accounts.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import type { Tailer } from '../../src/source/tailer.js';
import type { BinlogListener } from '../../src/source/binlog-listener.js';
import { serverStateOf } from '../../src/sink/datacenter-worker.js';
import { check } from '../../scripts/harness.js';
import { textGet } from '../../scripts/memcached-text.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanup: (() => Promise<void>)[] = [];
const runCleanup = async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
};
afterEach(runCleanup);
after(runCleanup);

/** Peak resident memory of a live process (VmHWM), MB. */
function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function adminOptions(env: TestEnv) {
  const c = mysqlFor(env.config.mysql, 'admin');
  return { host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database };
}

async function payloadCount(env: TestEnv): Promise<number> {
  let n = 0;
  let cursor = '0';
  do {
    const [next, found] = await env.redis.scan(cursor, 'MATCH', new RedisKeys(env.prefix).payloadPattern, 'COUNT', 1000);
    cursor = next;
    n += found.length;
  } while (cursor !== '0');
  return n;
}

const LEASE_TROUBLE = /lost the lease|not renewed in time|lease renewal was late/;

/** Rows of the bulk transaction; TEST_LARGE_TXN_ROWS runs the same test at 1,000,000 or 5,000,000 by hand. */
const N = Number(process.env.TEST_LARGE_TXN_ROWS ?? 100_000);

test(`a ${N.toLocaleString('en')}-row transaction streams through in chunks and converges everywhere, with a server down and the worker group killed midway`, { timeout: Math.max(600_000, N * 2) }, async (t) => {
  // East is two servers of its own: one stays up, the other is down while the transaction is
  // applied and comes back empty (warmed from its peer, then given what it missed).
  const [up, down] = [await PrivateMemcached.create(), await PrivateMemcached.create()];
  cleanup.push(() => up.stop(), () => down.stop());
  await up.start();
  await down.start();
  const env = await createTestEnv({
    partitions: 1,
    overrides: { 'datacenters.east': { servers: [up.address, down.address] }, 'memcached.timeoutMs': 1_000, 'worker.shutdownGraceMs': 500 },
  });
  cleanup.push(() => env.teardown());
  const keys = new RedisKeys(env.prefix);
  await env.sql.query("CALL create_namespace(50, 'bulk')");
  const configFile = writeConfigFile(env.config);
  await env.startWorker('west');
  let east = new McreplProcess(['-c', configFile, 'worker', 'east']);
  cleanup.push(async () => east.kill('SIGKILL'));
  await east.waitForOutput(/"msg":"mcrepl ready"/);
  const tailer = new McreplProcess(['-c', configFile, 'tailer']);
  cleanup.push(async () => tailer.kill('SIGKILL'));
  await tailer.waitForOutput(/"msg":"mcrepl ready"/);

  await down.stop();
  const prefix = `${env.prefix}:big:`;
  // One statement, one transaction (the bulk load).
  const startedAt = Date.now();
  await env.root.query(`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT 50, CONCAT(?, seq), CONCAT('v', seq, ?) FROM seq_1_to_${N}`, [prefix, 'x'.repeat(80)]);
  const returnedAt = Date.now(); // autocommit: the statement's return is its COMMIT
  const last = `${prefix}${N}`;
  const phases: string[] = [];
  const phase = (what: string) => phases.push(`${what} +${((Date.now() - returnedAt) / 1000).toFixed(1)} s`);

  // Killed in the middle: once it has applied a first chunk of the transaction.
  await waitFor(async () => Number((await env.redis.hget(keys.applied('east'), '0'))?.split(':').at(-1) ?? 0) > 0, { timeoutMs: 60_000 + N / 10, intervalMs: 5, message: 'east applied a first chunk' });
  phase('east applied a first chunk');
  east.kill('SIGKILL');
  await east.exited;
  const firstEast = east;
  east = new McreplProcess(['-c', configFile, 'worker', 'east']);
  await down.start();
  void east.waitForOutput(/"msg":"mcrepl ready"/).then(() => phase('the new east worker ready'), () => undefined);
  await waitFor(async () => (await Promise.all(env.servers.map((s) => textGet(s, last)))).every((v) => v !== null), { timeoutMs: 120_000 + N / 10, message: 'every server holds the last key' });
  phase('every server holds the last key');
  // The returning server may hold the last key from its warm copy before it has what it
  // missed: converged means healthy again with nothing left to replay.
  await waitFor(
    async () => serverStateOf((await env.redis.hget(keys.servers('east'), down.address)) ?? undefined)?.health === 'healthy' && (await env.redis.hlen(keys.missed('east', down.address))) === 0,
    { timeoutMs: 120_000 + N / 10, message: 'the returning server healthy, nothing left kept for it' },
  );
  phase('the returning server healthy');
  t.diagnostic(phases.join(', '));
  t.diagnostic(
    `converged ${((Date.now() - returnedAt) / 1000).toFixed(1)} s after the COMMIT (the statement itself took ${((returnedAt - startedAt) / 1000).toFixed(1)} s), including the worker group's kill and restart`,
  );

  const result = await check(adminOptions(env), env.servers, [], { nsId: 50 });
  if (result.divergent.size > 0 || process.env.TEST_LARGE_TXN_LOGS) {
    const file = `/tmp/mcrepl-large-txn-${env.id}.log`;
    fs.writeFileSync(file, [firstEast.stdout, '----- second east worker', east.stdout, east.stderr, '----- tailer', tailer.stdout].join('\n'));
    t.diagnostic(`the workers' logs are in ${file}`);
  }
  assert.equal(result.liveKeys.size, N, 'the registry holds every key');
  assert.equal(result.divergent.size, 0, `divergent keys: ${JSON.stringify([...result.divergent.values()].slice(0, 3))}`);
  assert.equal(result.present, N * env.servers.length, 'every key on every server');

  // Streamed: staged chunk by chunk, not held whole.
  await tailer.waitForOutput(/"msg":"a large transaction ended"/);
  const ended = JSON.parse(tailer.stdout.split('\n').find((l) => l.includes('"msg":"a large transaction ended"'))!) as { rows: number; outcome: string };
  assert.deepEqual([ended.rows, ended.outcome], [N, 'commit']);
  const tailerPeak = peakRssMb(tailer.child.pid!);
  const eastPeak = peakRssMb(east.child.pid!);
  t.diagnostic(`peak RSS: tailer ${tailerPeak.toFixed(0)} MB, east worker ${eastPeak.toFixed(0)} MB`);
  assert.ok(tailerPeak <= 200, `tailer peak RSS ${tailerPeak.toFixed(0)} MB`);
  assert.ok(eastPeak <= 200, `worker peak RSS ${eastPeak.toFixed(0)} MB`);
  for (const p of [tailer, firstEast, east]) assert.doesNotMatch(p.stdout + p.stderr, LEASE_TROUBLE);
  assert.doesNotMatch(tailer.stdout, /"msg":"tailer failed"|"msg":"mcrepl restarting/);
  await waitFor(async () => (await payloadCount(env)) === 0, { message: 'no payload left once every data center applied them' });
});

test('a large transaction that ends in ROLLBACK applies nothing and leaves no payload behind', async () => {
  // MariaDB never logs a rolled-back mc_storage row (it is in the transaction cache), but a
  // server that did would end the group with ROLLBACK after the rows were streamed: played
  // through the listener's own events here.
  const env = await createTestEnv({ partitions: 2, overrides: { 'tailer.batchMaxOps': 100 } });
  cleanup.push(() => env.teardown());
  await env.sql.query("CALL create_namespace(51, 'rolled-back')");
  const { tailer } = await env.startPipeline();
  const listener = (tailer as unknown as { listener: BinlogListener }).listener;
  const row = (key: string) => ({ values: { ns_id: 51, mc_key: Buffer.from(key), mc_value: Buffer.from('never'), expire: 0, op: 'set', flush_id: null, problem: null }, timeSec: Math.floor(Date.now() / 1000) });
  const ghosts = Array.from({ length: 1_000 }, () => env.key('ghost'));
  for (let i = 0; i < ghosts.length; i += 100) listener.emit('rows', { rows: ghosts.slice(i, i + 100).map(row) });
  await waitFor(() => (tailer as Tailer).stats.stagedChunks === 10, { message: 'ten chunks staged' });
  assert.ok((await payloadCount(env)) > 0, 'the chunks are in Redis, waiting for the end of their transaction');
  listener.emit('transaction', { rows: [], streamed: true, rolledBack: true, position: listener.position, commitTimeSec: Math.floor(Date.now() / 1000) });
  const k = env.key('after');
  await env.sql.query('CALL set_key(51, ?, ?, 0)', [k, 'committed']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'committed'), { message: 'a later transaction applied' });
  for (const g of [ghosts[0]!, ghosts.at(-1)!]) assert.deepEqual(await env.readEverywhere(g), [null, null, null, null], `${g} never applied`);
  await waitFor(async () => (await payloadCount(env)) === 0, { message: 'the rolled-back chunks removed from Redis' });
});
