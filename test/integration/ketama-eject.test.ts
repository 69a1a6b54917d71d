/**
 * nutcracker with `auto_eject_hosts: true` in front of a ketama data center. A server is stopped
 * (kill -9) while writes go on and a reader keeps reading through nutcracker, filling what it
 * misses from "the database" (look-aside caching: on a miss, read the database, set the value,
 * read the database again and delete the key if it changed meanwhile). The server returns, empty.
 *
 * The checker: writes come in rounds (every key set to the round's number in one transaction);
 * a round counts as applied once the data center has applied it (a fence key, last in the
 * transaction, is on its server, no job is left, and no server is replaying what it missed). No
 * read that began after a round was applied may return an older round.
 *
 * With `ejectDeletes` (the default) mcrepl also deletes the stopped server's keys on the server
 * nutcracker falls back to, so nothing the reader filled there goes stale. Without it, the same
 * run finds stale reads: the checker has teeth.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { ensureReaders } from '../../scripts/stack.js';
import type { DatacenterWorker } from '../../src/sink/datacenter-worker.js';
import { KetamaRing } from '../../src/sink/routes/ketama-ring.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { Nutcracker } from '../helpers/readers.js';
import { waitFor } from '../helpers/wait-for.js';

const KEYS = 150;
const RETRY_MS = 1_000;
const base = layout.mariadb.port - 6;

interface Outcome {
  reads: number;
  stale: string[];
  fills: number;
  fillsWhileDown: number;
  foreignLeft: number;
}

async function run(ejectDeletes: boolean, port: number): Promise<Outcome> {
  ensureReaders();
  const servers = await Promise.all([0, 1, 2].map(() => PrivateMemcached.create()));
  await Promise.all(servers.map((s) => s.start()));
  const nutcracker = new Nutcracker(port, port + 1, path.join(layout.dir, 'ketama-eject'));
  let env: TestEnv | undefined;
  let stop = false;
  const out: Outcome = { reads: 0, stale: [], fills: 0, fillsWhileDown: 0, foreignLeft: 0 };
  try {
    const specs = servers.map((s) => `${s.address}:1`);
    env = await createTestEnv({
      partitions: 1,
      overrides: { 'datacenters.east': { routing: 'ketama', hash: 'fnv1a_64', servers: specs, ejectDeletes, readerRetryMs: RETRY_MS + 500 } },
    });
    const e = env;
    const { workers } = await e.startPipeline();
    const east = workers.find((w) => w.dc === 'east') as DatacenterWorker;
    await e.sql.query("CALL create_namespace(1, 'eject')");
    await nutcracker.start({ hash: 'fnv1a_64', servers: specs, autoEject: true, failureLimit: 1, retryTimeoutMs: RETRY_MS, timeoutMs: 500 });

    const ring = new KetamaRing(servers.map((s) => ({ address: s.address, weight: 1 })), 'fnv1a_64');
    const keys = Array.from({ length: KEYS }, (_, i) => `${i}:${e.prefix}:eject`);
    const victim = 1;
    // The fence key lives on a server that is never stopped.
    let fence = 0;
    while (ring.serverFor(Buffer.from(`${fence}:${e.prefix}:fence`)) === victim) fence++;
    const fenceKey = `${fence}:${e.prefix}:fence`;
    const fenceServer = new MemcachedTextClient(servers[ring.serverFor(Buffer.from(fenceKey))]!.address);

    // "The database": the round each key was last committed at.
    const committed = new Map<string, number>();
    const appliedAt: number[] = [];
    let victimDown = false;

    const writeRound = async (r: number) => {
      await e.sql.query('START TRANSACTION');
      for (const k of keys) await e.sql.query('CALL set_key(1, ?, ?, 0)', [k, String(r)]);
      await e.sql.query('CALL set_key(1, ?, ?, 0)', [fenceKey, String(r)]);
      await e.sql.query('COMMIT');
      for (const k of keys) committed.set(k, r);
      await waitFor(
        async () => {
          const f = await fenceServer.get(fenceKey);
          if (f?.value.toString() !== String(r)) return false;
          if ((await e.backlog()) > 0) return false;
          return east.serverHealth().every((s) => s.health !== 'recovering');
        },
        { timeoutMs: 20_000, message: `round ${r} applied` },
      );
      appliedAt[r] = performance.now();
    };
    const lastAppliedBefore = (t: number) => {
      let r = 0;
      for (let i = appliedAt.length - 1; i > 0; i--) if (appliedAt[i]! < t) return i;
      return r;
    };

    // The reader: one at a time through nutcracker, filling misses from the database.
    const reader = (async () => {
      const c = new MemcachedTextClient(nutcracker.address, 2_000);
      for (let i = 0; !stop; i = (i + 1) % KEYS) {
        const k = keys[i]!;
        const began = performance.now();
        try {
          const got = await c.get(k);
          if (got) {
            out.reads++;
            const round = Number(got.value.toString());
            const applied = lastAppliedBefore(began);
            if (round < applied) out.stale.push(`${k}: read round ${round} after round ${applied} was applied`);
            continue;
          }
          const r = committed.get(k);
          if (r === undefined) continue;
          await c.set(k, String(r));
          out.fills++;
          if (victimDown) out.fillsWhileDown++;
          if (committed.get(k) !== r) await c.delete(k);
        } catch {
          // nutcracker answers an error while it ejects a server: read again.
          await new Promise((res) => setImmediate(res));
        }
      }
      c.close();
    })();

    let r = 0;
    for (let i = 0; i < 4; i++) await writeRound(++r);
    await servers[victim]!.stop();
    victimDown = true;
    // The reader finds the server gone and fills its keys on the server nutcracker falls back to.
    await waitFor(() => out.fillsWhileDown >= 20, { timeoutMs: 10_000, message: 'fills on the fallback server' });
    for (let i = 0; i < 6; i++) await writeRound(++r);
    await servers[victim]!.start();
    victimDown = false;
    for (let i = 0; i < 4; i++) await writeRound(++r);
    // Past the readers' retry time, and more rounds once they read the returned server again.
    const back = performance.now();
    while (performance.now() - back < RETRY_MS * 2 + 1_000) await writeRound(++r);
    for (let i = 0; i < 3; i++) await writeRound(++r);
    stop = true;
    await reader;
    fenceServer.close();

    // What readers filled elsewhere for the returned server is gone once they read it again.
    const foreign = async () => {
      let n = 0;
      for (const [i, s] of servers.entries()) {
        const c = new MemcachedTextClient(s.address);
        for (const k of keys) if (ring.serverFor(Buffer.from(k)) !== i && (await c.get(k))) n++;
        c.close();
      }
      return n;
    };
    if (ejectDeletes) await waitFor(async () => (await foreign()) === 0, { timeoutMs: 10_000, message: 'no server holds a key it does not own' });
    out.foreignLeft = await foreign();
    return out;
  } finally {
    stop = true;
    await nutcracker.stop();
    await env?.teardown();
    await Promise.all(servers.map((s) => s.stop()));
  }
}

test('auto_eject_hosts: a server stops and returns under writes; no read through nutcracker returns a value older than what was applied before it began', { timeout: 120_000 }, async () => {
  const o = await run(true, base + 54);
  assert.ok(o.fillsWhileDown > 0, 'the reader filled the fallback server while the server was down');
  assert.ok(o.reads > KEYS * 5, `${o.reads} reads`);
  assert.deepEqual(o.stale.slice(0, 10), [], `${o.stale.length} stale reads of ${o.reads}`);
  assert.equal(o.foreignLeft, 0);
});

test('the same without ejectDeletes: the checker finds the reads the fallback server serves stale', { timeout: 120_000 }, async () => {
  const o = await run(false, base + 56);
  assert.ok(o.fillsWhileDown > 0);
  assert.ok(o.stale.length > 0, `stale reads expected without ejectDeletes (${o.reads} reads, ${o.fills} fills)`);
});
