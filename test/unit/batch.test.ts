import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Batch } from '../../src/fanout/batch.js';
import type { DeadLetter } from '../../src/fanout/dead-letters.js';
import { encodedSize } from '../../src/fanout/job-codec.js';
import type { DeleteOp, FlushMarkerOp, Op, SetOp } from '../../src/fanout/op.js';
import { partitionOf } from '../../src/fanout/partitioner.js';

const set = (key: string, value = 'v', t = 1): SetOp => ({ kind: 'set', t, nsId: 1, key: Buffer.from(key), value: Buffer.from(value), expiresAt: 0 });
const del = (key: string, t = 1): DeleteOp => ({ kind: 'delete', t, nsId: 1, key: Buffer.from(key) });
const flush = (flushId: number, t = 1): FlushMarkerOp => ({ kind: 'flush', t, nsId: 1, flushId, token: `token-${flushId}` });

/** Keys that land in distinct partitions (first found for each). */
function keysByPartition(partitions: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.filter(Boolean).length < partitions; i++) {
    const k = `key-${i}`;
    const p = partitionOf(Buffer.from(k), partitions);
    out[p] ??= k;
  }
  return out;
}

describe('Batch', () => {
  test('starts empty', () => {
    const b = new Batch(4, 17);
    assert.equal(b.partitions, 4);
    assert.equal(b.ops.length, 4);
    assert.ok(b.ops.every((l) => Array.isArray(l) && l.length === 0));
    assert.notEqual(b.ops[0], b.ops[1], 'each partition has its own list');
    assert.equal(b.opCount, 0);
    assert.equal(b.bytes, 0);
    assert.equal(b.transactions, 0);
    assert.equal(b.position, undefined);
    assert.equal(b.txnSeq, 17);
    assert.equal(b.firstOpAt, 0);
    assert.deepEqual(b.deadLetters, []);
    assert.equal(b.isEmpty, true);
  });

  test('sets and deletes go to the partition of their key, in source order', () => {
    const b = new Batch(16, 0);
    const ops: Op[] = [];
    for (let i = 0; i < 200; i++) ops.push(i % 3 ? set(`k${i % 50}`, `v${i}`, i) : del(`k${i % 50}`, i));
    for (const op of ops) b.add(op);
    for (let p = 0; p < 16; p++) {
      const expected = ops.filter((op) => op.kind !== 'flush' && partitionOf(op.key, 16) === p);
      assert.deepEqual(b.ops[p], expected, `partition ${p}`);
    }
    assert.equal(
      b.ops.reduce((n, l) => n + l.length, 0),
      200,
    );
    assert.equal(b.opCount, 200);
  });

  test('all ops on one key land in one partition', () => {
    const b = new Batch(8, 0);
    b.add(set('same', '1'));
    b.add(del('same'));
    b.add(set('same', '2'));
    const nonEmpty = b.ops.filter((l) => l.length > 0);
    assert.equal(nonEmpty.length, 1);
    assert.deepEqual(
      nonEmpty[0]!.map((o) => o.kind),
      ['set', 'delete', 'set'],
    );
    assert.equal(b.ops[partitionOf(Buffer.from('same'), 8)], nonEmpty[0]);
  });

  test('a flush marker goes to every partition, after the deletes already there', () => {
    const keys = keysByPartition(4);
    const b = new Batch(4, 0);
    for (const k of keys) b.add(del(k, 5));
    const marker = flush(99, 5);
    b.add(marker);
    b.add(set(keys[2]!, 'after', 6));
    for (let p = 0; p < 4; p++) {
      const list = b.ops[p]!;
      assert.deepEqual(list[0], del(keys[p]!, 5), `partition ${p}`);
      assert.equal(list[1], marker, `partition ${p} has the marker after its delete`);
    }
    assert.deepEqual(b.ops[2]![2], set(keys[2]!, 'after', 6));
    assert.equal(b.ops[2]!.length, 3);
    // The marker counts as one op.
    assert.equal(b.opCount, 4 + 1 + 1);
  });

  test('a flush marker in a one-partition batch', () => {
    const b = new Batch(1, 0);
    b.add(set('a'));
    b.add(flush(1));
    b.add(del('b'));
    assert.deepEqual(
      b.ops[0]!.map((o) => o.kind),
      ['set', 'flush', 'delete'],
    );
  });

  test('bytes is the sum of the encoded sizes of the ops added', () => {
    const b = new Batch(4, 0);
    const ops: Op[] = [set('a', 'x'.repeat(1000)), del('bb'), flush(3), set('é', '')];
    for (const op of ops) b.add(op);
    assert.equal(
      b.bytes,
      ops.reduce((n, op) => n + encodedSize(op), 0),
    );
    assert.equal(b.bytes, 23 + 1 + 1000 + 15 + 2 + 22 + 'token-3'.length + 23 + 2);
  });

  test('firstOpAt is the time of the first op only', (t) => {
    let now = 1_000;
    t.mock.method(Date, 'now', () => now);
    const b = new Batch(2, 0);
    b.add(set('a'));
    assert.equal(b.firstOpAt, 1_000);
    now = 2_000;
    b.add(set('b'));
    b.add(flush(1));
    assert.equal(b.firstOpAt, 1_000);
  });

  test('commit records the position, the sequence number and counts transactions', () => {
    const b = new Batch(2, 10);
    b.add(set('a', 'v', 11));
    b.commit({ gtidSet: 'uuid:1-11' }, 11);
    assert.deepEqual(b.position, { gtidSet: 'uuid:1-11' });
    assert.equal(b.txnSeq, 11);
    assert.equal(b.transactions, 1);
    b.add(del('a', 12));
    b.commit({ gtidSet: 'uuid:1-12' }, 12);
    // A transaction of another table: position moves, txnSeq stays.
    b.commit({ file: 'binlog.000003', pos: 4711 }, 12);
    assert.deepEqual(b.position, { file: 'binlog.000003', pos: 4711 });
    assert.equal(b.txnSeq, 12);
    assert.equal(b.transactions, 3);
    assert.equal(b.opCount, 2);
  });

  test('isEmpty: false once a transaction is committed, even without ops', () => {
    const b = new Batch(2, 0);
    assert.equal(b.isEmpty, true);
    b.commit({ file: 'binlog.000001', pos: 4 }, 0);
    assert.equal(b.isEmpty, false);
    assert.equal(b.opCount, 0);
  });

  test('isEmpty: false with only a dead letter', () => {
    const b = new Batch(2, 0);
    const dl: DeadLetter = { at: new Date(0).toISOString(), stage: 'tailer', reason: 'key is empty', op: { op: 'set' } };
    b.deadLetters.push(dl);
    assert.equal(b.isEmpty, false);
    assert.equal(b.transactions, 0);
  });

  test('isEmpty: false with committed ops', () => {
    const b = new Batch(2, 0);
    b.add(set('a'));
    b.commit({ gtidSet: 'x:1' }, 1);
    assert.equal(b.isEmpty, false);
  });
});
