import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Batch } from '../../src/fanout/batch.js';
import type { SetOp } from '../../src/fanout/op.js';
import { Pacer, type PacedJob } from '../../src/fanout/pacer.js';

let t = 0;
const set = (key: string): SetOp => ({ kind: 'set', t: ++t, nsId: 1, key: Buffer.from(key), value: Buffer.from('v'), expiresAt: 0 });
function batch(partitions: number, ...keys: string[]): Batch {
  const b = new Batch(partitions, 0);
  for (const k of keys) b.add(set(k));
  return b;
}
const show = (jobs: PacedJob[]) => jobs.map((j) => `p${j.partition} ${j.dcs.join('+')}: ${j.ops.map((o) => (o.kind === 'flush' ? 'F' : o.key.toString())).join(',')}`);
const limits = { maxOps: 5, maxBytes: 1 << 20, maxHoldMs: 1_000 };

test('data centers whose queue is empty share one job per partition, as before', () => {
  const pacer = new Pacer(['east', 'west'], limits);
  assert.deepEqual(show(pacer.plan(batch(1, 'a', 'b'), 1, () => 0, 0)), ['p0 east+west: a,b']);
  assert.equal(pacer.holding, false);
  assert.equal(pacer.oldestHeld(), undefined);
});

test('a data center with a job waiting gets the next ops later, in one job, once its queue is empty', () => {
  const pacer = new Pacer(['east', 'west'], limits);
  const waiting = new Map([['west', 1]]);
  const w = (dc: string) => waiting.get(dc) ?? 0;
  assert.deepEqual(show(pacer.plan(batch(1, 'a'), 1, w, 0)), ['p0 east: a']);
  assert.deepEqual(show(pacer.plan(batch(1, 'b'), 2, w, 10)), ['p0 east: b']);
  assert.equal(pacer.oldestHeld(), 1, 'the checkpoint may not pass batch 1');
  waiting.set('west', 0); // west's worker took its job
  assert.deepEqual(show(pacer.plan(batch(1, 'c'), 3, w, 20)), ['p0 west: a,b,c', 'p0 east: c']);
  assert.equal(pacer.holding, false);
});

test('held ops go out on their own (no new batch) once the queue is empty, or after maxHoldMs, or when they reach maxOps', () => {
  const pacer = new Pacer(['east'], limits);
  pacer.plan(batch(1, 'a'), 1, () => 1, 0);
  assert.deepEqual(pacer.plan(undefined, 2, () => 1, 500), [], 'still waiting');
  assert.deepEqual(show(pacer.plan(undefined, 3, () => 1, 1_000)), ['p0 east: a'], 'held for maxHoldMs: out anyway (its workers may be down)');

  pacer.plan(batch(1, 'a', 'b', 'c'), 4, () => 1, 2_000);
  assert.deepEqual(show(pacer.plan(batch(1, 'd', 'e'), 5, () => 1, 2_001)), ['p0 east: a,b,c,d,e'], 'maxOps reached');
  assert.equal(pacer.heldBytes, 0);
});

test('force sends everything held (before a large transaction, at shutdown); untouched partitions are released on their own', () => {
  const pacer = new Pacer(['east', 'west'], { ...limits, maxOps: 100 });
  const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
  pacer.plan(batch(2, ...keys), 1, (dc) => (dc === 'west' ? 1 : 0), 0);
  assert.ok(pacer.heldBytes > 0);
  const forced = pacer.plan(undefined, 2, () => 1, 1, true);
  assert.deepEqual(forced.map((j) => [j.partition, j.dcs.join()]).sort(), [[0, 'west'], [1, 'west']]);
  assert.equal(pacer.holding, false);

  pacer.plan(batch(2, ...keys), 3, (dc) => (dc === 'west' ? 1 : 0), 2);
  const p0Only = new Batch(2, 0);
  for (const k of keys) {
    const b = batch(2, k);
    if (b.ops[0]!.length > 0) p0Only.add(b.ops[0]![0]!);
  }
  const released = pacer.plan(p0Only, 4, () => 0, 3);
  assert.ok(released.some((j) => j.partition === 1 && j.dcs.join() === 'west'), 'partition 1, not in the batch, released once its queue is empty');
  assert.equal(pacer.holding, false);
});

test('maxHoldMs 0: never holds', () => {
  const pacer = new Pacer(['east', 'west'], { ...limits, maxHoldMs: 0 });
  assert.deepEqual(show(pacer.plan(batch(1, 'a'), 1, () => 3, 0)), ['p0 east+west: a']);
});
