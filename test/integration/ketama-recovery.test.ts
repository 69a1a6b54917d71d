/**
 * A server of a ketama data center restarts (kill -9, started again empty) while writes go on.
 * With replicas 2 it is warmed with exactly the keys it owns, from the other servers that hold
 * them, and what it missed is replayed: it ends holding every key it owns with its last value
 * and nothing else. With replicas 1 there is no other copy: it starts empty (and counts as
 * complete), and only what is written after, or what it missed, lands there.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import type { DatacenterWorker } from '../../src/sink/datacenter-worker.js';
import { KetamaRing } from '../../src/sink/routes/ketama-ring.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';

const KEYS = 2_000;

async function valuesOn(address: string, keys: string[]): Promise<(string | null)[]> {
  const c = new MemcachedTextClient(address, 10_000);
  try {
    const out: (string | null)[] = [];
    for (let i = 0; i < keys.length; i += 500) out.push(...(await c.getEach(keys.slice(i, i + 500).map((k) => Buffer.from(k)))).map((v) => v?.toString() ?? null));
    return out;
  } finally {
    c.close();
  }
}

for (const replicas of [2, 1]) {
  test(`replicas ${replicas}: a server that restarts empty ${replicas > 1 ? 'is warmed with exactly the keys it owns' : 'starts empty, and gets what it missed'}`, { timeout: 120_000 }, async () => {
    const servers = await Promise.all([0, 1, 2].map(() => PrivateMemcached.create()));
    await Promise.all(servers.map((s) => s.start()));
    const specs = servers.map((s) => `${s.address}:1`);
    let env: TestEnv | undefined;
    try {
      env = await createTestEnv({ partitions: 2, overrides: { 'datacenters.east': { routing: 'ketama', hash: 'fnv1a_64', replicas, servers: specs, ejectDeletes: false } } });
      const { workers } = await env.startPipeline();
      const east = workers.find((w) => w.dc === 'east') as DatacenterWorker;
      await env.sql.query("CALL create_namespace(1, 'recovery')");
      const keys = Array.from({ length: KEYS }, (_, i) => `${i}:${env!.prefix}:r`);
      const committed = new Map<string, string>();
      const write = async (from: number, to: number, tag: string) => {
        await env!.sql.query('START TRANSACTION');
        for (let i = from; i < to; i++) {
          await env!.sql.query('CALL set_key(1, ?, ?, 0)', [keys[i], `${tag}-${i}`]);
          committed.set(keys[i]!, `${tag}-${i}`);
        }
        await env!.sql.query('COMMIT');
      };
      const ring = new KetamaRing(servers.map((s) => ({ address: s.address, weight: 1 })), 'fnv1a_64');
      const owns = (s: number, k: string) => ring.owners(Buffer.from(k), replicas).includes(s);
      const victim = 1;
      const allWhere = async (check: (s: number, k: string, v: string | null) => boolean) => {
        const got = await Promise.all(servers.map((s) => valuesOn(s.address, keys)));
        return keys.every((k, i) => servers.every((_, s) => check(s, k, got[s]![i]!)));
      };

      await write(0, KEYS, 'first');
      await waitFor(() => allWhere((s, k, v) => (owns(s, k) ? v === committed.get(k) : v === null)), { timeoutMs: 30_000, intervalMs: 200, message: 'every key on its owners' });

      // Down, with writes it misses, then back empty.
      await servers[victim]!.stop();
      await write(0, KEYS / 4, 'missed');
      await waitFor(() => east.serverHealth()[victim]!.health !== 'healthy', { timeoutMs: 10_000, message: 'the server seen down' });
      await servers[victim]!.start();
      await waitFor(() => east.serverHealth()[victim]!.health === 'healthy', { timeoutMs: 30_000, message: 'the server healthy again' });
      await write(KEYS / 2, KEYS / 2 + 100, 'after');

      if (replicas > 1) {
        // Warmed with its keys from the others, the missed ones replayed: it holds every key it owns, with its last value.
        await waitFor(() => allWhere((s, k, v) => (owns(s, k) ? v === committed.get(k) : v === null)), { timeoutMs: 30_000, intervalMs: 200, message: 'every key on its owners, the restarted server included, and nowhere else' });
      } else {
        // No other copy: it holds only what it missed and what came after; nothing it does not own.
        const fresh = (k: string) => committed.get(k)!.startsWith('missed') || committed.get(k)!.startsWith('after');
        await waitFor(
          () => allWhere((s, k, v) => (s !== victim ? (owns(s, k) ? v === committed.get(k) : v === null) : owns(s, k) && fresh(k) ? v === committed.get(k) : v === null)),
          { timeoutMs: 30_000, intervalMs: 200, message: 'the restarted server holds what it missed and what came after, nothing else' },
        );
        const st = JSON.parse((await env.redis.hget(`${env.prefix}:servers:east`, servers[victim]!.address)) ?? '{}') as { complete?: boolean };
        assert.notEqual(st.complete, false, 'with no other copy it counts as complete (readers fill it)');
      }
    } finally {
      await env?.teardown();
      await Promise.all(servers.map((s) => s.stop()));
    }
  });
}
