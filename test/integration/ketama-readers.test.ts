/**
 * The ketama ring (src/sink/routes/ketama-ring.ts) against the readers themselves: keys are written through
 * nutcracker (twemproxy) and through pylibmc (libmemcached, `ketama_weighted`), started by the
 * test, and found on each server of the stack's memcached directly; each key must be on exactly
 * the server the ring names. ASCII, UTF-8 and other high-byte keys, equal and unequal weights,
 * named servers, both of twemproxy's hashes.
 *
 * nutcracker listens on the stack's port base + 50 (stats + 51), started per case and stopped by
 * its PID.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { KetamaRing, type KetamaHash, type RingServer } from '../../src/sink/routes/ketama-ring.js';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { ensureReaders } from '../../scripts/stack.js';
import { layout } from '../helpers/env.js';
import { Nutcracker, pylibmcSet } from '../helpers/readers.js';

const base = layout.mariadb.port - 6;
const dir = path.join(layout.dir, 'ketama-readers');
const servers = layout.memcached.slice(0, 3).map((m) => `127.0.0.1:${m.port}`);
const clients = servers.map((s) => new MemcachedTextClient(s, 5_000));

before(() => {
  ensureReaders();
  fs.mkdirSync(dir, { recursive: true });
});
after(() => {
  for (const c of clients) c.close();
});

/** Keys of every kind the ring must place alike: ASCII, UTF-8, and bytes that are not UTF-8. */
function keys(prefix: string, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    if (i % 3 === 0) return Buffer.from(`${prefix}:ascii:${i}`);
    if (i % 3 === 1) return Buffer.from(`${prefix}:ключ-é-${i}-日本`);
    return Buffer.concat([Buffer.from(`${prefix}:bin:`), Buffer.from([0x80 + (i % 0x7f), 0xff, 0xc0 + (i % 7)]), Buffer.from(String(i))]);
  });
}

/** Which servers hold each key, read directly. */
async function whereAre(ks: Buffer[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const k of ks) {
    const found = await Promise.all(clients.map((c) => c.get(k)));
    out.push(found.flatMap((r, i) => (r ? [i] : [])));
  }
  return out;
}

/** The test's keys off the servers again. */
async function forget(ks: Buffer[]): Promise<void> {
  for (const k of ks) await Promise.all(clients.map((c) => c.delete(k)));
}

function assertPlaced(ring: KetamaRing, ks: Buffer[], where: number[][], reader: string): void {
  let wrong = 0;
  const examples: string[] = [];
  ks.forEach((k, i) => {
    const expected = [ring.serverFor(k)];
    if (JSON.stringify(where[i]) !== JSON.stringify(expected)) {
      wrong++;
      if (examples.length < 5) examples.push(`${k.toString('hex')}: ${reader} put it on ${JSON.stringify(where[i])}, the ring says ${expected[0]}`);
    }
  });
  assert.equal(wrong, 0, `${wrong} of ${ks.length} keys are not where the ring places them:\n${examples.join('\n')}`);
}

/** nutcracker with `spec` servers; the keys are set through it. */
async function throughNutcracker(hash: KetamaHash, specs: string[], ks: Buffer[]): Promise<void> {
  const nc = new Nutcracker(base + 50, base + 51, dir);
  await nc.start({ hash, servers: specs });
  try {
    const proxy = new MemcachedTextClient(nc.address, 5_000);
    try {
      for (const k of ks) await proxy.set(k, 'v');
    } finally {
      proxy.close();
    }
  } finally {
    // Gone before the next case listens on its port.
    await nc.stop();
  }
}

/** pylibmc with KETAMA_WEIGHTED (md5); the keys are set through it. */
const throughPylibmc = (ks: Buffer[]) => pylibmcSet(servers, ks);

const ringOf = (specs: RingServer[], hash: KetamaHash) => new KetamaRing(specs, hash);

for (const hash of ['fnv1a_64', 'md5'] as const) {
  test(`nutcracker, hash ${hash}, equal weights: every key on the server the ring names`, async () => {
    const ks = keys(`nc-${hash}-${Date.now()}`, 1_500);
    await throughNutcracker(hash, servers.map((s) => `${s}:1`), ks);
    const where = await whereAre(ks);
    await forget(ks);
    assertPlaced(ringOf(servers.map((s) => ({ address: s, weight: 1 })), hash), ks, where, 'nutcracker');
  });

  test(`nutcracker, hash ${hash}, weights 1/2/3 and named servers: every key on the server the ring names`, async () => {
    const ks = keys(`ncw-${hash}-${Date.now()}`, 1_500);
    const specs = servers.map((s, i) => ({ address: s, weight: i + 1, name: `cache-${String.fromCharCode(97 + i)}` }));
    await throughNutcracker(hash, specs.map((s) => `${s.address}:${s.weight} ${s.name}`), ks);
    const where = await whereAre(ks);
    await forget(ks);
    assertPlaced(ringOf(specs, hash), ks, where, 'nutcracker');
  });
}

test('pylibmc ketama_weighted: every key on the server the ring names (md5)', async () => {
  const ks = keys(`py-${Date.now()}`, 1_500);
  await throughPylibmc(ks);
  const where = await whereAre(ks);
  await forget(ks);
  assertPlaced(ringOf(servers.map((s) => ({ address: s, weight: 1 })), 'md5'), ks, where, 'pylibmc');
});
