/**
 * A ketama data center end to end: 20,000 keys (ASCII, UTF-8 and bytes that are not UTF-8)
 * written through `CALL set_key` land exactly where the readers' own clients look for them.
 * nutcracker (twemproxy) configured with the same servers, and pylibmc with `ketama_weighted`,
 * read every key back with its value, and each key is on exactly `replicas` servers of the
 * data center (and on the backup server, in the case with one) and nowhere else.
 *
 * Each case gets three memcached servers of its own (empty), so what they hold is the test's.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { ensureReaders } from '../../scripts/stack.js';
import { KetamaRing, type KetamaHash, type RingServer } from '../../src/sink/routes/ketama-ring.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { Nutcracker, pylibmcGet } from '../helpers/readers.js';
import { waitFor } from '../helpers/wait-for.js';

const KEYS = 20_000;
const GET_BATCH = 500;
const base = layout.mariadb.port - 6;
const nutcracker = new Nutcracker(base + 52, base + 53, path.join(layout.dir, 'ketama'));

/** ASCII, UTF-8, and bytes that are not UTF-8 (every high byte), all valid memcached keys. */
function mixedKeys(prefix: string, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    if (i % 3 === 0) return Buffer.from(`${prefix}:ascii:${i}`);
    if (i % 3 === 1) return Buffer.from(`${i}:${prefix}:ключ-é-日本`);
    return Buffer.concat([Buffer.from(`${i}:${prefix}:`), Buffer.from([0x80 + (i % 0x80), 0xff, 0xa0, 0xc0 + (i % 7)])]);
  });
}

/** Every key's value on one server, `null` where missing. */
async function readAll(address: string, keys: Buffer[]): Promise<(Buffer | null)[]> {
  const c = new MemcachedTextClient(address, 10_000);
  try {
    const out: (Buffer | null)[] = [];
    for (let i = 0; i < keys.length; i += GET_BATCH) out.push(...(await c.getEach(keys.slice(i, i + GET_BATCH))));
    return out;
  } finally {
    c.close();
  }
}

async function writeThroughSetKey(env: TestEnv, keys: Buffer[], value: (i: number) => string): Promise<void> {
  for (let i = 0; i < keys.length; i += 1_000) {
    await env.sql.query('START TRANSACTION');
    for (let j = i; j < Math.min(keys.length, i + 1_000); j++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [keys[j], value(j)]);
    await env.sql.query('COMMIT');
  }
}

interface Case {
  hash: KetamaHash;
  weights: number[];
  names: boolean;
  replicas: number;
  /** pylibmc knows no names; it reads the unnamed cases. */
  pylibmc: boolean;
  /** A fourth server as `backup`: it gets every key. */
  backup?: boolean;
}

const cases: Case[] = [
  { hash: 'fnv1a_64', weights: [1, 2, 3], names: true, replicas: 1, pylibmc: false },
  { hash: 'md5', weights: [3, 1, 2], names: true, replicas: 2, pylibmc: false },
  { hash: 'md5', weights: [1, 2, 3], names: false, replicas: 1, pylibmc: true },
  { hash: 'fnv1a_64', weights: [1, 1, 1], names: false, replicas: 1, pylibmc: false, backup: true },
];

after(() => nutcracker.stop());

for (const c of cases) {
  test(`${KEYS} keys through set_key to a ketama data center (${c.hash}, weights ${c.weights.join('/')}${c.names ? ', named servers' : ''}, replicas ${c.replicas}${c.backup ? ', a backup server' : ''}): every key found by nutcracker${c.pylibmc ? " and pylibmc" : ""}`, { timeout: 180_000 }, async () => {
    ensureReaders();
    const all = await Promise.all((c.backup ? [0, 1, 2, 3] : [0, 1, 2]).map(() => PrivateMemcached.create()));
    await Promise.all(all.map((s) => s.start()));
    const servers = all.slice(0, 3);
    const ring: RingServer[] = servers.map((s, i) => ({ address: s.address, weight: c.weights[i]!, ...(c.names ? { name: `cache-${i}` } : {}) }));
    const specs = ring.map((r) => `${r.address}:${r.weight}${r.name ? ` ${r.name}` : ''}`);
    let env: TestEnv | undefined;
    try {
      env = await createTestEnv({ overrides: { 'datacenters.east': { routing: 'ketama', hash: c.hash, replicas: c.replicas, servers: specs, ...(c.backup ? { backup: [all[3]!.address] } : {}) } } });
      await env.startPipeline();
      await env.sql.query("CALL create_namespace(1, 'golden')");
      const keys = mixedKeys(env.prefix, KEYS);
      const value = (i: number) => `value-${i}-${c.hash}`;
      await writeThroughSetKey(env, keys, value);

      const owners = new KetamaRing(ring, c.hash);
      // The key's servers on the ring, and the backup (index 3) if any.
      const expected = keys.map((k) => [...owners.owners(k, c.replicas), ...(c.backup ? [3] : [])]);
      let where: (Buffer | null)[][] = [];
      await waitFor(
        async () => {
          where = await Promise.all(all.map((s) => readAll(s.address, keys)));
          return expected.every((own, i) => own.every((s) => where[s]![i] !== null));
        },
        { timeoutMs: 60_000, intervalMs: 500, message: 'every key on its servers' },
      );
      // Exactly its owners, with its value; nowhere else.
      const wrong: string[] = [];
      keys.forEach((k, i) => {
        const on = all.map((_, s) => s).filter((s) => where[s]![i] !== null);
        if (JSON.stringify(on) !== JSON.stringify([...expected[i]!].sort())) wrong.push(`${k.toString('hex')} on ${JSON.stringify(on)}, owners ${JSON.stringify(expected[i])}`);
        else if (on.some((s) => where[s]![i]!.toString() !== value(i))) wrong.push(`${k.toString('hex')}: wrong value`);
      });
      assert.equal(wrong.length, 0, `${wrong.length} keys misplaced:\n${wrong.slice(0, 5).join('\n')}`);
      const items = await Promise.all(all.map(async (s) => {
        const cl = new MemcachedTextClient(s.address);
        try {
          return Number((await cl.stats()).curr_items);
        } finally {
          cl.close();
        }
      }));
      const copies = c.replicas + (c.backup ? 1 : 0);
      assert.equal(items.reduce((a, b) => a + b, 0), KEYS * copies, `the servers hold ${KEYS} × ${copies} items and nothing else (${items.join(' + ')})`);

      // The readers, configured with the same servers, find every key with its value.
      await nutcracker.start({ hash: c.hash, servers: specs });
      try {
        const viaProxy = await readAll(nutcracker.address, keys);
        const missed = keys.flatMap((k, i) => (viaProxy[i]?.toString() === value(i) ? [] : [`${k.toString('hex')}: ${String(viaProxy[i])}`]));
        assert.equal(missed.length, 0, `nutcracker did not find ${missed.length} keys:\n${missed.slice(0, 5).join('\n')}`);
      } finally {
        await nutcracker.stop();
      }
      if (c.pylibmc) {
        const viaPylibmc = await pylibmcGet(specs, keys);
        const missed = keys.flatMap((k, i) => (viaPylibmc[i]?.toString() === value(i) ? [] : [`${k.toString('hex')}: ${String(viaPylibmc[i])}`]));
        assert.equal(missed.length, 0, `pylibmc did not find ${missed.length} keys:\n${missed.slice(0, 5).join('\n')}`);
      }
    } finally {
      await env?.teardown();
      await Promise.all(all.map((s) => s.stop()));
    }
  });
}
