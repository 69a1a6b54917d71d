import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryGuard } from '../../src/observability/memory.js';
import { silentLogger } from '../../src/observability/logger.js';

const GB = 1024 ** 3;

test('collects only above the limit; a live set above the limit backs off instead of collecting over and over', () => {
  let collections = 0;
  const roomy = new MemoryGuard(GB, silentLogger, 60_000, () => collections++);
  assert.equal(roomy.check(GB / 2), false);
  assert.equal(collections, 0);
  assert.equal(roomy.check(2 * GB), true, 'over the limit: collect');
  assert.equal(collections, 1);
  assert.equal(roomy.check(1.1 * GB), true, 'what is live after collecting is under the limit, so the limit still applies');
  roomy.stop();

  // A limit below what this process really holds: after one collection, the next waits for growth.
  const tight = new MemoryGuard(1, silentLogger, 60_000, () => collections++);
  const live = process.memoryUsage().heapUsed + process.memoryUsage().external;
  assert.equal(tight.check(live), true);
  assert.equal(tight.check(live * 1.1), false, 'not again until memory grew by a quarter');
  assert.equal(tight.check(live * 3), true);
  assert.equal(tight.stats.collections, 2);
  tight.stop();
});

test('the collector is reachable at run time (no --expose-gc needed)', () => {
  const g = new MemoryGuard(1, silentLogger, 60_000);
  assert.equal(g.check(Number.MAX_SAFE_INTEGER), true, 'a real collection ran');
  g.stop();
});
