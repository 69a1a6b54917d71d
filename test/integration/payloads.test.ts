/**
 * A batch's ops (more than a few) are stored once per partition, in a payload hash shared by
 * every data center's job: each data center releases its share when it has applied the job, the
 * last one deletes it, a data center that is behind keeps it alive, and payloads a dead tailer
 * left without jobs are removed by the next tailer.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { encodeOps } from '../../src/fanout/job-codec.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
after(() => env?.teardown());

async function payloads(env: TestEnv): Promise<Map<string, string[]>> {
  const keys = new RedisKeys(env.prefix);
  const out = new Map<string, string[]>();
  let cursor = '0';
  do {
    const [next, found] = await env.redis.scan(cursor, 'MATCH', keys.payloadPattern, 'COUNT', 1000);
    cursor = next;
    for (const k of found) out.set(k, (await env.redis.hkeys(k)).sort());
  } while (cursor !== '0');
  return out;
}

test('payloads live until every data center applied them; orphans of a dead tailer are swept', async () => {
  env = await createTestEnv({ partitions: 2 });
  await env.sql.query("CALL create_namespace(1, 'payloads')");
  // West is behind (not running): its share of every payload stays.
  await env.startWorker('east');
  const tailer = await env.startTailer();
  // One transaction of 40 keys × 1 KB: each partition's share is over INLINE_MAX_BYTES, so it
  // goes to a payload (a few ops would travel inside the jobs).
  const keys = Array.from({ length: 40 }, () => env.key('p'));
  const big = 'x'.repeat(1024);
  await env.sql.query('START TRANSACTION');
  for (const k of keys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
  for (const k of keys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [`${k}:big`, big]);
  await env.sql.query('COMMIT');
  await waitFor(async () => (await env.readEverywhere(keys.at(-1)!)).slice(0, 2).every((v) => v?.toString() === `v-${keys.at(-1)}`), { message: 'east applied everything' });
  await waitFor(async () => {
    const p = await payloads(env);
    return p.size > 0 && [...p.values()].every((fields) => fields.join(',') === 'd,west');
  }, { message: 'every payload waits for west only' });

  await env.startWorker('west');
  await waitFor(async () => (await env.readEverywhere(keys.at(-1)!)).every((v) => v?.toString() === `v-${keys.at(-1)}`), { message: 'west caught up' });
  await waitFor(async () => (await payloads(env)).size === 0, { message: 'no payload left once both applied them' });

  // A tailer that died between writing payloads and adding their jobs: one payload every data
  // center is past (garbage), one with ops nobody has applied yet (kept).
  const epoch = JSON.parse((await env.redis.get(new RedisKeys(env.prefix).checkpoint))!).epoch as string;
  const applied = Number((await env.redis.hget(new RedisKeys(env.prefix).applied('east'), '0'))!.split(':').at(-1));
  const rk = new RedisKeys(env.prefix);
  const ops = encodeOps([{ kind: 'set', t: 1, nsId: 1, key: Buffer.from('x'), value: Buffer.from('y'), expiresAt: 0 }]);
  const garbage = rk.payload(`${epoch}:0:1:${applied}`);
  const pending = rk.payload(`${epoch}:0:${applied + 1000}:${applied + 1000}`);
  const otherStream = rk.payload(`another-epoch:0:1:1`);
  for (const k of [garbage, pending, otherStream]) await env.redis.hset(k, 'd', ops, 'east', '1', 'west', '1');
  await tailer.close();
  await env.startTailer();
  const left = await payloads(env);
  assert.ok(!left.has(garbage), 'a payload every data center is past is removed at start');
  assert.ok(left.has(pending), 'a payload with ops not yet applied is kept');
  assert.ok(left.has(otherStream), "another stream's payloads are left alone");
});
