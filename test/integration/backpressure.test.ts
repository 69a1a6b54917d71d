/**
 * Backpressure: while more than `tailer.maxPendingBytes` wait to be enqueued, the tailer pauses
 * the binlog stream, and resumes once they are in Redis. Pausing must never lose or stall ops.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ overrides: { 'tailer.maxPendingBytes': 20_000 } });
  await env.sql.query("CALL create_namespace(1, 'bp')");
});
after(async () => env?.teardown());

test('the stream pauses under a tiny pending bound and resumes; every write arrives', async () => {
  const [, tailer] = [await env.startWorkers(), await env.startTailer()];
  const tag = env.key('bp');
  const value = (i: number) => `${i}:`.padEnd(10_000, 'x');
  // Multi-row statements: several 10 KB rows arrive together and overflow the bound.
  for (let i = 0; i < 300; i += 10) {
    const rows = Array.from({ length: 10 }, (_, j) => [1, `${tag}:${i + j}`, value(i + j)]);
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES ?', [rows]);
  }
  await waitFor(async () => {
    for (let i = 0; i < 300; i++) if (!(await env.readEverywhere(`${tag}:${i}`)).every((v) => v?.toString() === value(i))) return false;
    return true;
  }, { timeoutMs: 30_000, message: 'all 300 values everywhere' });
  assert.ok(tailer.stats.pauses > 0, 'the stream was paused at least once');
});
