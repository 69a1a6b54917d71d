/**
 * The registry sweeper's config and its wiring to the tailer's states, without servers. What a
 * sweep does in MySQL is tested against MariaDB in test/integration/registry-expiry.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { LifecycleState } from '../../src/coordination/lifecycle.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import { RegistrySweeper, sweepWhileRunning } from '../../src/registry/registry-sweeper.js';

const DCS = { 'datacenters.east': { servers: ['10.0.0.5:11211'] } };
const load = (over: Record<string, unknown> = {}, env: Record<string, string> = {}) => loadConfig({ env, overrides: { ...DCS, ...over } }).config;
const problems = (over: Record<string, unknown>): string[] => {
  try {
    load(over);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  return assert.fail('expected a ConfigError');
};

describe('registry config', () => {
  test('defaults: a sweep a minute, 1000 rows per batch, 10 minutes of grace', () => {
    assert.deepEqual(load().registry, { sweepIntervalMs: 60_000, sweepBatch: 1_000, sweepGraceS: 600 });
  });

  test('from the environment', () => {
    const c = load({}, { MCREPL_REGISTRY__SWEEP_INTERVAL_MS: '0', MCREPL_REGISTRY__SWEEP_BATCH: '5000', MCREPL_REGISTRY__SWEEP_GRACE_S: '30' });
    assert.deepEqual(c.registry, { sweepIntervalMs: 0, sweepBatch: 5_000, sweepGraceS: 30 });
  });

  test('out of range values are refused, each named', () => {
    for (const [field, value] of [
      ['sweepIntervalMs', -1],
      ['sweepIntervalMs', 1.5],
      ['sweepBatch', 0],
      ['sweepBatch', 100_001],
      ['sweepGraceS', -1],
      ['sweepGraceS', 2_592_001],
    ] as const) {
      const p = problems({ [`registry.${field}`]: value });
      assert.equal(p.length, 1, `${field} ${value}: ${p.join('; ')}`);
      assert.match(p[0]!, new RegExp(`^registry\\.${field}: `), `${field} ${value}`);
    }
    assert.match(problems({ 'registry.sweepEvery': 5 })[0]!, /unknown option.*sweepEvery/);
  });
});

describe('sweepWhileRunning', () => {
  const logger = createLogger({ level: 'silent', name: 'test', stderr: true });
  const sweeperOf = (intervalMs: number) => new RegistrySweeper(load().mysql, { sweepIntervalMs: intervalMs, sweepBatch: 10, sweepGraceS: 0 }, logger);

  test('sweeps only while the component is running (holds its lease), and stops for good when it stops', async () => {
    const tailer = new EventEmitter<{ state: [LifecycleState] }>();
    const sweeper = sweeperOf(3_600_000);
    sweepWhileRunning(tailer, sweeper);
    for (const s of ['created', 'waiting-for-lease', 'starting'] as const) {
      tailer.emit('state', s);
      assert.equal(sweeper.isRunning, false, `not while ${s}`);
    }
    tailer.emit('state', 'running');
    assert.equal(sweeper.isRunning, true);
    tailer.emit('state', 'stopping');
    assert.equal(sweeper.isRunning, false);
    await sweeper.close();
    // A closed sweeper does not start again (a replacement tailer gets a sweeper of its own).
    tailer.emit('state', 'running');
    assert.equal(sweeper.isRunning, false);
    assert.deepEqual(await sweeper.sweep(), { removed: 0, batches: 0, ms: 0 });
  });

  test('a failed component closes its sweeper', async () => {
    const tailer = new EventEmitter<{ state: [LifecycleState] }>();
    const sweeper = sweeperOf(3_600_000);
    sweepWhileRunning(tailer, sweeper);
    tailer.emit('state', 'running');
    tailer.emit('state', 'failed');
    assert.equal(sweeper.isRunning, false);
    await sweeper.close();
  });

  test('sweepIntervalMs 0: never starts', async () => {
    const tailer = new EventEmitter<{ state: [LifecycleState] }>();
    const sweeper = sweeperOf(0);
    sweepWhileRunning(tailer, sweeper);
    tailer.emit('state', 'running');
    assert.equal(sweeper.isRunning, false);
    await sweeper.close();
  });
});
