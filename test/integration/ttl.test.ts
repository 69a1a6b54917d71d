/**
 * TTLs are fixed at commit time (the binlog event's timestamp): lag never extends them, and an
 * op whose expiry passed before it could be applied deletes the key instead of setting it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv();
  await env.startTailer();
  await env.sql.query("CALL create_namespace(1, 'ttl')");
});
after(async () => env?.teardown());

const absentEverywhere = (v: (Buffer | null)[]) => v.every((b) => b === null);

/** Reads the key on every server until the queues are drained, failing if `forbidden` ever shows. */
async function watchUntilDrained(key: string, forbidden: string, sentinel: string): Promise<number> {
  let reads = 0;
  await waitFor(
    async () => {
      for (const v of await env.readEverywhere(key)) {
        reads++;
        assert.notEqual(v?.toString(), forbidden, `${key} appeared with the expired value`);
      }
      const s = await env.readEverywhere(sentinel);
      return s.every((b) => b?.toString() === 'S') && (await env.backlog()) === 0;
    },
    { timeoutMs: 15_000, intervalMs: 5, message: 'sentinel everywhere and queues drained' },
  );
  return reads;
}

test('with the workers stopped longer than the TTL, the entry never appears once they start', async () => {
  const k = env.key('expired');
  await env.sql.query('CALL set_key(1, ?, ?, 2)', [k, 'short-lived']);
  const committed = Date.now();
  // The workers are down for longer than the TTL.
  await waitFor(() => Date.now() > committed + 3_200, { timeoutMs: 5_000, message: 'TTL to pass' });
  const sentinel = env.key('sentinel');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'S']);
  assert.ok((await env.backlog()) > 0, 'the ops are waiting in the queues');
  await env.startWorkers();
  const reads = await watchUntilDrained(k, 'short-lived', sentinel);
  assert.ok(reads > 0);
  assert.ok(absentEverywhere(await env.readEverywhere(k)));
  await env.stopWorkers();
});

test('an expired set deletes the older value it replaced instead of leaving it behind', async () => {
  const k = env.key('replaced');
  await env.startWorkers();
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'old'), { message: 'old value everywhere' });
  await env.stopWorkers();
  await env.sql.query('CALL set_key(1, ?, ?, 1)', [k, 'new-but-expired']);
  const committed = Date.now();
  await waitFor(() => Date.now() > committed + 2_200, { timeoutMs: 5_000, message: 'TTL to pass' });
  const sentinel = env.key('sentinel');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'S']);
  await env.startWorkers();
  await watchUntilDrained(k, 'new-but-expired', sentinel);
  assert.ok(absentEverywhere(await env.readEverywhere(k)), 'the old value was deleted, not left behind');
  await env.stopWorkers();
});

test('lag does not extend a TTL: the entry expires at commit time + TTL, not apply time + TTL', async () => {
  // TTL 8 s, workers started 3 s after the commit: expiry is due at commit + 8 s (+1 s for
  // memcached's one-second clock); counted from apply time it would be commit + 11 s or later.
  // The margins leave room for a slow worker start on a loaded machine.
  const k = env.key('lagged');
  await env.sql.query('CALL set_key(1, ?, ?, 8)', [k, 'lagged']);
  const committed = Date.now();
  await waitFor(() => Date.now() > committed + 3_000, { timeoutMs: 5_000, message: 'lag to build up' });
  await env.startWorkers();
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'lagged'), { timeoutMs: 4_000, message: 'the entry while still valid' });
  await waitFor(async () => absentEverywhere(await env.readEverywhere(k)), { timeoutMs: 12_000, intervalMs: 50, message: 'expiry' });
  const expiredAfter = Date.now() - committed;
  assert.ok(expiredAfter < 9_700, `expired ${expiredAfter} ms after commit; a TTL counted from apply time would be ≥ 11000 ms`);
  assert.ok(expiredAfter >= 6_000, `expired ${expiredAfter} ms after commit, well before its TTL`);
});
