/**
 * The tailer's batching window (`tailer.lingerMs`): the first op after a quiet spell goes out at
 * once; while ops keep coming, at most one batch per window, so a burst becomes a few big jobs.
 * A long window here (1.5 s) makes the difference between "at once" and "waited" unmistakable.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Tailer } from '../../src/source/tailer.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

const LINGER_MS = 1_500;
let env: TestEnv;
let tailer: Tailer;
before(async () => {
  env = await createTestEnv({ overrides: { 'tailer.lingerMs': LINGER_MS } });
  await env.sql.query("CALL create_namespace(1, 'batching')");
  await env.startWorkers();
  tailer = await env.startTailer();
});
after(async () => env?.teardown());

/** Milliseconds from now until `key` shows `value` on every server. */
async function visibleAfter(key: string, value: string): Promise<number> {
  const t0 = performance.now();
  await waitFor(async () => (await env.readEverywhere(key)).every((v) => v?.toString() === value), { timeoutMs: 10_000, intervalMs: 20, message: `${key} everywhere` });
  return performance.now() - t0;
}

test('after a quiet spell an op goes out at once; one right behind it waits for the window', async () => {
  await sleep(LINGER_MS + 200); // quiet
  const first = env.key('first');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [first, '1']);
  const firstMs = await visibleAfter(first, '1');
  assert.ok(firstMs < LINGER_MS / 2, `the first op after quiet took ${firstMs.toFixed(0)} ms: it waited for the window`);
  // Its batch went out at most ~firstMs ago: the next op waits for the rest of the window.
  const second = env.key('second');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [second, '2']);
  const secondMs = await visibleAfter(second, '2');
  assert.ok(secondMs > LINGER_MS / 3, `an op right behind a batch took only ${secondMs.toFixed(0)} ms: the window was not kept`);
});

test('a burst of commits becomes a few batches, not one per commit', async () => {
  await sleep(LINGER_MS + 200);
  const batches = tailer.stats.batches;
  const keys = Array.from({ length: 40 }, () => env.key('burst'));
  for (const k of keys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'b']);
  await waitFor(async () => {
    for (const k of keys) if (!(await env.readEverywhere(k)).every((v) => v?.toString() === 'b')) return false;
    return true;
  }, { timeoutMs: 10_000, message: 'the burst everywhere' });
  const used = tailer.stats.batches - batches;
  assert.ok(used >= 1 && used <= 3, `40 commits in ${used} batches`);
});
