import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { runDaemon, type Component } from '../../src/cli/commands/daemon.js';
import { McreplError } from '../../src/errors.js';
import { silentLogger } from '../../src/observability/logger.js';

test('an instance that fails for a passing reason is replaced, even if its start() then rejects with the fallout', async () => {
  const starts: number[] = [];
  const create = (attempt: number): Component => {
    const c = new EventEmitter() as Component;
    c.start = async () => {
      starts.push(attempt);
      if (attempt === 0) {
        // Lost its lease while starting: the fatal event, then start() rejects as its connections close.
        c.emit('fatal', new McreplError('LEASE_LOST', 'lost the lease', { retriable: true }));
        throw new Error('Connection is closed.');
      }
    };
    c.close = async () => undefined;
    return c;
  };
  const done = runDaemon([{ name: 'worker east', create }], silentLogger, { heapGrowingPercent: 0 });
  for (let i = 0; i < 100 && starts.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(starts, [0, 1], 'the replacement started; the process did not stop');
  process.emit('SIGTERM', 'SIGTERM');
  assert.equal(await done, 0);
});
