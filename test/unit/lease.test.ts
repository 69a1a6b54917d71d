import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Redis } from 'ioredis';
import { Lease } from '../../src/coordination/lease.js';
import { silentLogger } from '../../src/observability/logger.js';

test('a lease request that Redis never answers (lost in a reconnect) is asked again, not waited for forever', { timeout: 10_000 }, async () => {
  let calls = 0;
  const redis = {
    // The first SET is caught in a connection reset: no reply, ever. The second succeeds.
    set: () => (++calls === 1 ? new Promise<never>(() => undefined) : Promise.resolve('OK')),
    get: () => Promise.resolve(null),
  } as unknown as Redis;
  const lease = new Lease(redis, 'test:lease', 300, silentLogger);
  await lease.acquire();
  assert.equal(calls, 2);
  assert.equal(lease.isHeld, true);
  await lease.release().catch(() => undefined);
});
