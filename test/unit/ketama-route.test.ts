/**
 * A ketama data center: its config, which servers get which op (owners, replicas, backups, the
 * deletes for readers that eject a server), and where a server's keys are warmed from.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { datacenterSchema, ringOf, serversOf } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import type { SetOp } from '../../src/fanout/op.js';
import { KetamaRing } from '../../src/sink/routes/ketama-ring.js';
import { KetamaRoute } from '../../src/sink/routes/ketama-route.js';
import { createRoute } from '../../src/sink/routes/create-route.js';
import { MigrationRoute } from '../../src/sink/routes/migration-route.js';
import { samePlacement } from '../../src/sink/membership.js';

const set = (key: string, t = 1): SetOp => ({ kind: 'set', t, nsId: 1, key: Buffer.from(key), value: Buffer.from('v'), expiresAt: 0 });
const keys = Array.from({ length: 2_000 }, (_, i) => `k:${i}`);

function dc(input: Record<string, unknown>) {
  return datacenterSchema.parse(input);
}

function problems(input: Record<string, unknown>): string[] {
  try {
    loadConfig({ env: {}, overrides: { 'mysql.host': 'db', datacenters: { east: input } } });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.replace(' (from the command line)', ''));
    throw err;
  }
  return [];
}

describe('ketama data-center config', () => {
  test("servers in twemproxy's syntax, with the defaults", () => {
    const d = dc({ routing: 'ketama', servers: ['10.0.0.1:11211:1 a', '10.0.0.2:11211:2', '10.0.0.3:11212'] });
    assert.equal(d.routing, 'ketama');
    if (d.routing !== 'ketama') return;
    assert.deepEqual(d.servers, ['10.0.0.1:11211:1 a', '10.0.0.2:11211:2', '10.0.0.3:11212:1'], 'servers as written, weights spelled out');
    assert.deepEqual(dc(d), d, 'the resolved form reads back the same (a config file written from it)');
    assert.deepEqual(serversOf(d), ['10.0.0.1:11211', '10.0.0.2:11211', '10.0.0.3:11212'], 'their addresses');
    assert.deepEqual(ringOf(d), [
      { address: '10.0.0.1:11211', weight: 1, name: 'a' },
      { address: '10.0.0.2:11211', weight: 2 },
      { address: '10.0.0.3:11212', weight: 1 },
    ]);
    assert.equal(d.hash, 'fnv1a_64', "twemproxy's default hash");
    assert.equal(d.replicas, 1);
    assert.deepEqual(d.backup, []);
    assert.equal(d.ejectDeletes, true);
    assert.deepEqual(serversOf(dc({ routing: 'ketama', servers: ['h:1', 'h:2'], backup: ['h:3'] })), ['h:1', 'h:2', 'h:3'], 'backups after the ring');
  });

  test('mistakes are named', () => {
    assert.deepEqual(problems({ servers: ['h:1'], replicas: 2 }), ["datacenters.east.replicas: 'replicas' applies to routing: ketama only (this data center replicates every key to every server)"]);
    assert.deepEqual(problems({ servers: ['h:1:2'] }), ['datacenters.east.servers.0: expected host:port, e.g. 10.0.0.5:11211'], 'weights only with ketama');
    assert.deepEqual(problems({ routing: 'ketama', servers: ['h:1', 'h:2'], replicas: 3 }), ['datacenters.east.replicas: replicas: 3 needs at least that many servers (there are 2)']);
    assert.deepEqual(problems({ routing: 'ketama', servers: ['h'] }), ["datacenters.east.servers.0: 'h' is not host:port[:weight] [name], e.g. 10.0.0.5:11211:1 cache-a"]);
    assert.deepEqual(problems({ routing: 'ketama', servers: ['h:1:0'] }), ["datacenters.east.servers.0: 'h:1:0': the weight must be 1 or more, e.g. 10.0.0.5:11211:1 cache-a"]);
    assert.deepEqual(problems({ routing: 'ketama', servers: ['h:1:1 a', 'h:2:1 a'] }), ["datacenters.east.servers: the name 'a' is given to two servers: their points would coincide"]);
    assert.deepEqual(problems({ routing: 'ketama', servers: ['h:1', 'h:2'], backup: ['h:2'] }), ["datacenters.east.backup: h:2 is listed twice (a backup is not one of the ring's servers)"]);
  });
});

describe('ketama route', () => {
  const servers = ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'];

  test('each key goes to its owner on the ring, and to replicas - 1 more distinct servers; backups get all', () => {
    for (const replicas of [1, 2, 3]) {
      const route = createRoute(dc({ routing: 'ketama', servers, replicas, backup: ['127.0.0.1:9'] })) as KetamaRoute;
      const ring = new KetamaRing(servers.map((address) => ({ address, weight: 1 })), 'fnv1a_64');
      const ops = keys.map((k) => set(k));
      const out = route.assign(ops, new Set());
      assert.equal(out.length, 4);
      assert.equal(out[3], ops, 'the backup gets every op');
      for (const op of ops) {
        const on = [0, 1, 2].filter((i) => out[i]!.includes(op));
        assert.equal(on.length, replicas, `${op.key} on ${replicas} servers`);
        assert.equal(on.includes(ring.serverFor(op.key)), true, 'the reader’s server is one of them');
        for (const i of [0, 1, 2]) assert.equal(route.holds(i, op.key), on.includes(i));
        assert.equal(route.holds(3, op.key), true);
      }
    }
  });

  test('while a server is ejected, its keys are also deleted where a reader that ejects it reads them', () => {
    for (const weights of [[1, 1, 1], [1, 2, 3]]) {
      const specs = servers.map((address, i) => ({ address, weight: weights[i]! }));
      const route = createRoute(dc({ routing: 'ketama', servers: specs.map((s) => `${s.address}:${s.weight}`) }));
      const without1 = new KetamaRing([specs[0]!, specs[2]!], 'fnv1a_64');
      const ops = keys.map((k) => set(k));
      const out = route.assign(ops, new Set([1]));
      const full = new KetamaRing(specs, 'fnv1a_64');
      let fallbacks = 0;
      for (const op of ops) {
        const owner = full.serverFor(op.key);
        const readerAt = [0, 2][without1.serverFor(op.key)]!;
        assert.ok(out[owner]!.includes(op), 'the set still goes to its owner (kept while it is down)');
        const deletes = out.flatMap((list, i) => list.filter((o) => o.kind === 'delete' && o.key.equals(op.key)).map(() => i));
        if (readerAt === owner) assert.deepEqual(deletes, [], 'no delete where the reader reads the owner');
        else {
          assert.deepEqual(deletes, [readerAt], `a delete of ${op.key} on the server the reader falls back to`);
          fallbacks++;
        }
      }
      assert.ok(fallbacks > keys.length / 5, `${fallbacks} keys read elsewhere while server 1 is ejected`);
    }
  });

  test('no such deletes with ejectDeletes off, or with replicas 2 (the reader falls back to the replica)', () => {
    const off = createRoute(dc({ routing: 'ketama', servers, ejectDeletes: false }));
    const two = createRoute(dc({ routing: 'ketama', servers, replicas: 2 }));
    for (const route of [off, two]) {
      const out = route.assign(keys.map((k) => set(k)), new Set([0]));
      assert.equal(out.flat().filter((o) => o.kind === 'delete').length, 0);
    }
  });

  test('where a server’s keys are warmed from', () => {
    assert.deepEqual(createRoute(dc({ routing: 'ketama', servers })).warmPeers(0), { full: [], parts: [] }, 'replicas 1: no other copy');
    assert.deepEqual(createRoute(dc({ routing: 'ketama', servers, replicas: 2 })).warmPeers(0), { full: [], parts: [1, 2] });
    const withBackup = createRoute(dc({ routing: 'ketama', servers, backup: ['127.0.0.1:8', '127.0.0.1:9'] }));
    assert.deepEqual(withBackup.warmPeers(1), { full: [3, 4], parts: [] }, 'a backup holds every key');
    assert.deepEqual(withBackup.warmPeers(3), { full: [4], parts: [0, 1, 2] }, 'a backup: from the other backup, or from the whole ring');
    assert.deepEqual(createRoute(dc({ servers })).warmPeers(2), { full: [0, 1], parts: [] }, 'replicate: every peer is a full copy');
  });
});

describe('a change of servers', () => {
  const three = ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'];
  const four = [...three, '127.0.0.1:4'];

  test('while keys move, every op goes to its servers under both placements, once per server', () => {
    const from = createRoute(dc({ routing: 'ketama', servers: three }));
    const to = createRoute(dc({ routing: 'ketama', servers: four }));
    const m = new MigrationRoute(from, to);
    assert.deepEqual(m.servers, four);
    const ops = keys.map((k) => set(k));
    const out = m.assign(ops, new Set());
    for (const op of ops) {
      const want = new Set([...from.holders(op.key).map((i) => three[i]!), ...to.holders(op.key).map((i) => four[i]!)]);
      const got = m.servers.filter((_, i) => out[i]!.includes(op));
      assert.deepEqual(new Set(got), want, `${op.key}`);
      assert.deepEqual(new Set(m.holders(op.key).map((i) => m.servers[i])), want);
    }
    for (const list of out) assert.equal(new Set(list.map((o) => o.key.toString())).size, list.length, 'one op per key per server');
  });

  test("an op wins over the other placement's delete for readers that eject a server", () => {
    const from = createRoute(dc({ routing: 'ketama', servers: three }));
    const to = createRoute(dc({ routing: 'ketama', servers: four }));
    const m = new MigrationRoute(from, to);
    const ops = keys.map((k) => set(k));
    const out = m.assign(ops, new Set([0]));
    for (const [i, list] of out.entries()) {
      for (const o of list) {
        if (o.kind !== 'delete') continue;
        assert.equal(m.holders(o.key).includes(i), false, `a delete of ${o.key} only where neither placement puts it`);
      }
    }
  });

  test('placements compare by what places keys, not by order or other options', () => {
    assert.equal(samePlacement(dc({ routing: 'ketama', servers: ['a:1', 'b:1'] }), dc({ routing: 'ketama', servers: ['b:1', 'a:1'], ejectDeletes: false })), true);
    assert.equal(samePlacement(dc({ routing: 'ketama', servers: ['a:1', 'b:1'] }), dc({ routing: 'ketama', servers: ['a:1', 'b:1:2'] })), false, 'a weight');
    assert.equal(samePlacement(dc({ routing: 'ketama', servers: ['a:1', 'b:1'] }), dc({ routing: 'ketama', servers: ['a:1', 'b:1'], replicas: 2 })), false);
    assert.equal(samePlacement(dc({ routing: 'ketama', servers: ['a:1', 'b:1'] }), dc({ routing: 'ketama', servers: ['a:1', 'b:1'], hash: 'md5' })), false);
    assert.equal(samePlacement(dc({ routing: 'ketama', servers: ['a:1', 'b:1 x'] }), dc({ routing: 'ketama', servers: ['a:1', 'b:1'] })), false, 'a name');
    assert.equal(samePlacement(dc({ servers: ['a:1', 'b:1'] }), dc({ routing: 'ketama', servers: ['a:1', 'b:1'] })), false, 'the routing');
  });
});
