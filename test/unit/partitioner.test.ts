import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fnv1a32, partitionOf } from '../../src/fanout/partitioner.js';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('fnv1a32', () => {
  test('matches the published FNV-1a 32-bit test vectors', () => {
    assert.equal(fnv1a32(b('')), 0x811c9dc5);
    assert.equal(fnv1a32(b('a')), 0xe40c292c);
    assert.equal(fnv1a32(b('foobar')), 0xbf9cf968);
    // More vectors from the FNV reference test suite.
    assert.equal(fnv1a32(b('b')), 0xe70c2de5);
    assert.equal(fnv1a32(b('foo')), 0xa9f37ed7);
  });

  test('always returns an unsigned 32-bit integer', () => {
    for (let i = 0; i < 2000; i++) {
      const h = fnv1a32(b(`key-${i}`));
      assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff, `hash ${h}`);
    }
    for (let x = 0; x < 256; x++) {
      const h = fnv1a32(Buffer.from([x, 0xff, x]));
      assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff);
    }
  });

  test('hashes bytes: a Buffer and an equal Uint8Array hash alike, different bytes differ', () => {
    const bytes = [0, 1, 0x80, 0xff, 0x20];
    assert.equal(fnv1a32(Buffer.from(bytes)), fnv1a32(new Uint8Array(bytes)));
    assert.notEqual(fnv1a32(Buffer.from([0xe9])), fnv1a32(b('é')));
    assert.notEqual(fnv1a32(b('ab')), fnv1a32(b('ba')));
  });
});

describe('partitionOf', () => {
  test('is the hash modulo the partition count', () => {
    assert.equal(partitionOf(b('foobar'), 16), 0xbf9cf968 % 16);
    assert.equal(partitionOf(b('a'), 7), 0xe40c292c % 7);
    assert.equal(partitionOf(b(''), 1000), 0x811c9dc5 % 1000);
  });

  test('is stable: the same key always lands in the same partition', () => {
    for (let i = 0; i < 500; i++) {
      const key = `user:${i}`;
      const p = partitionOf(b(key), 16);
      assert.equal(partitionOf(b(key), 16), p);
      assert.equal(partitionOf(new Uint8Array(b(key)), 16), p);
    }
  });

  test('stays within [0, partitions) for every partition count 1..1024 tried', () => {
    for (const n of [1, 2, 3, 7, 16, 31, 64, 1000, 1024]) {
      for (let i = 0; i < 300; i++) {
        const p = partitionOf(b(`k${i}:${n}`), n);
        assert.ok(Number.isInteger(p) && p >= 0 && p < n, `partition ${p} of ${n}`);
      }
    }
    assert.equal(partitionOf(b('anything'), 1), 0);
  });

  test('spreads 10k keys roughly evenly over 16 partitions', () => {
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 10_000; i++) counts[partitionOf(b(`ns1:user:${i}`), 16)]!++;
    assert.equal(
      counts.reduce((a, c) => a + c, 0),
      10_000,
    );
    // 625 expected each; allow +-25%.
    for (const [p, c] of counts.entries()) assert.ok(c > 470 && c < 780, `partition ${p} got ${c} keys: ${counts.join(',')}`);
  });

  test('spreads binary keys too', () => {
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 10_000; i++) {
      const key = Buffer.alloc(8);
      key.writeDoubleBE(i * 1.5);
      counts[partitionOf(key, 16)]!++;
    }
    for (const [p, c] of counts.entries()) assert.ok(c > 470 && c < 780, `partition ${p} got ${c} keys: ${counts.join(',')}`);
  });
});
