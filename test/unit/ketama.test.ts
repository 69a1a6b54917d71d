/**
 * The ketama ring's rules (src/sink/routes/ketama-ring.ts). Where keys land is checked against the readers
 * themselves (nutcracker, pylibmc) in test/integration/ketama-readers.test.ts; here, the parts
 * of the algorithm one at a time.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { parseRingServer } from '../../src/config/ring-server.js';
import { KetamaRing, keyHash, pointName } from '../../src/sink/routes/ketama-ring.js';

test("server specs in twemproxy's syntax, and the names their points are hashed from", () => {
  assert.deepEqual(parseRingServer('10.0.0.1:11211:1'), { address: '10.0.0.1:11211', weight: 1 });
  assert.deepEqual(parseRingServer('10.0.0.1:11212:3 cache-b'), { address: '10.0.0.1:11212', weight: 3, name: 'cache-b' });
  assert.deepEqual(parseRingServer('mc.local:11211'), { address: 'mc.local:11211', weight: 1 });
  assert.throws(() => parseRingServer('10.0.0.1'), /not host:port\[:weight\] \[name\]/);
  assert.throws(() => parseRingServer('10.0.0.1:11211:0'), /weight must be 1 or more/);
  assert.equal(pointName({ address: '10.0.0.1:11211', weight: 1 }), '10.0.0.1', 'port 11211 is left out (libmemcached compatibility)');
  assert.equal(pointName({ address: '10.0.0.1:11212', weight: 1 }), '10.0.0.1:11212');
  assert.equal(pointName({ address: '10.0.0.1:11212', weight: 1, name: 'b' }), 'b', 'a name replaces the address');
});

test("key hashes: md5's first four bytes little-endian; twemproxy's fnv1a_64 with signed bytes", () => {
  const key = Buffer.from('foo');
  assert.equal(keyHash(key, 'md5'), createHash('md5').update(key).digest().readUInt32LE(0));
  // FNV-1a over 32 bits with the 64-bit constants cut to 32 bits, written out by hand.
  let h = 0x84222325;
  for (const b of key) h = Math.imul((h ^ b) >>> 0, 0x1b3) >>> 0;
  assert.equal(keyHash(key, 'fnv1a_64'), h);
  // A byte of 0x80 or more is a negative char in C: XORed in sign-extended.
  const high = Buffer.from([0xc3, 0xa9]);
  let s = 0x84222325;
  for (const b of high) s = Math.imul((s ^ (0xffffff00 | b)) >>> 0, 0x1b3) >>> 0;
  assert.equal(keyHash(high, 'fnv1a_64'), s);
  let unsigned = 0x84222325;
  for (const b of high) unsigned = Math.imul((unsigned ^ b) >>> 0, 0x1b3) >>> 0;
  assert.notEqual(keyHash(high, 'fnv1a_64'), unsigned, 'the quirk changes the hash of a UTF-8 key');
});

test('points per server: 160 at equal weights, in proportion to the weights otherwise (float arithmetic as in C)', () => {
  const count = (ring: KetamaRing) => {
    const n = ring.servers.map(() => 0);
    for (let i = 0; i < 100_000; i++) n[ring.serverFor(Buffer.from(`k${i}`))]!++;
    return n;
  };
  const even = new KetamaRing(['a:1', 'b:1', 'c:1'].map((x) => ({ address: `${x}1211`, weight: 1 })), 'md5');
  assert.equal((even as unknown as { values: Uint32Array }).values.length, 480);
  const weighted = new KetamaRing([{ address: 'a:11211', weight: 1 }, { address: 'b:11211', weight: 2 }], 'md5');
  // floor(1/3 × 160 / 4 × 2) × 4 = 104 and floor(2/3 × 160 / 4 × 2) × 4 = 212.
  assert.equal((weighted as unknown as { values: Uint32Array }).values.length, 316);
  const [a, b] = count(weighted);
  assert.ok(b! > a! * 1.5 && b! < a! * 2.6, `the heavier server gets about twice the keys (${a} / ${b})`);
  for (const n of count(even)) assert.ok(n > 25_000 && n < 42_000, `each of three servers gets about a third (${n})`);
});

test('owners: the key\'s server first, then the next distinct ones on the ring; never more than there are', () => {
  const ring = new KetamaRing(['a', 'b', 'c', 'd'].map((h) => ({ address: `${h}:11211`, weight: 1 })), 'fnv1a_64');
  for (let i = 0; i < 2_000; i++) {
    const key = Buffer.from(`key:${i}`);
    const two = ring.owners(key, 2);
    assert.equal(two.length, 2);
    assert.equal(two[0], ring.serverFor(key));
    assert.notEqual(two[0], two[1]);
    assert.deepEqual(ring.owners(key, 3).slice(0, 2), two, 'a third replica extends the same walk');
  }
  assert.equal(ring.owners(Buffer.from('x'), 9).length, 4);
});

test('adding a server moves only the keys it now owns (about 1/n of them)', () => {
  const three = new KetamaRing(['a', 'b', 'c'].map((h) => ({ address: `${h}:11211`, weight: 1 })), 'md5');
  const four = new KetamaRing(['a', 'b', 'c', 'd'].map((h) => ({ address: `${h}:11211`, weight: 1 })), 'md5');
  let moved = 0;
  for (let i = 0; i < 20_000; i++) {
    const key = Buffer.from(`m${i}`);
    const before = three.serverFor(key);
    const after = four.serverFor(key);
    if (before !== after) {
      moved++;
      assert.equal(after, 3, 'a key that moves, moves to the new server');
    }
  }
  assert.ok(moved > 20_000 * 0.15 && moved < 20_000 * 0.35, `about a quarter moved (${moved})`);
});
