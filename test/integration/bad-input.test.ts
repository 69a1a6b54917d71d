/**
 * Bad input: each bad operation is refused by the procedures with a message that names the
 * problem; the same row inserted directly into the storage table is dead-lettered with its
 * reason, and the good rows around it are replicated.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import type { DeadLetter } from '../../src/fanout/dead-letters.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { keyProblem } from '../../src/fanout/op.js';
import { TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
// The cases need the env's key prefix, but node:test collects tests before `before` runs.
env = new TestEnv();
before(async () => {
  await env.setup();
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'bad')");
});
after(async () => env?.teardown());

interface BadCase {
  name: string;
  nsId: number;
  key: Buffer | string | null;
  value: Buffer | string | null;
  expire: number;
  message: RegExp;
}

const cases: BadCase[] = [
  { name: 'key longer than 250 bytes', nsId: 1, key: 'k'.repeat(251), value: 'v', expire: 0, message: /key is 251 bytes; memcached keys are at most 250 bytes/ },
  { name: 'multi-byte key over 250 bytes', nsId: 1, key: 'ключ'.repeat(32), value: 'v', expire: 0, message: /key is 256 bytes/ },
  { name: 'key with a space', nsId: 1, key: `${env.prefix} spaced`, value: 'v', expire: 0, message: /key has a space at byte \d+/ },
  { name: 'key with a control character', nsId: 1, key: `${env.prefix}\ttab`, value: 'v', expire: 0, message: /key has control byte 0x09 at byte \d+/ },
  { name: 'key with a NUL byte', nsId: 1, key: Buffer.from([0x61, 0x00, 0x62]), value: 'v', expire: 0, message: /key has control byte 0x00 at byte 2/ },
  { name: 'empty key', nsId: 1, key: '', value: 'v', expire: 0, message: /key is empty/ },
  { name: 'NULL value for a set', nsId: 1, key: `${env.prefix}:nullvalue`, value: null, expire: 0, message: /value is NULL/ },
  { name: 'unknown namespace', nsId: 99, key: `${env.prefix}:nons`, value: 'v', expire: 0, message: /unknown namespace 99/ },
  { name: 'negative expire', nsId: 1, key: `${env.prefix}:neg`, value: 'v', expire: -5, message: /expire is -5/ },
  { name: 'value over the item size', nsId: 1, key: `${env.prefix}:huge`, value: Buffer.alloc(1_048_576 + 1, 0x61), expire: 0, message: /value is 1048577 bytes; .* exceeds the memcached item size of 1048576 bytes/ },
];

async function deadLetters(): Promise<DeadLetter[]> {
  const raw = await env.redis.lrange(new RedisKeys(env.prefix).deadLetters, 0, -1);
  return raw.map((r) => JSON.parse(r) as DeadLetter);
}

describe('refused by the procedures', () => {
  for (const c of cases) test(c.name, async () => {
    await assert.rejects(env.sql.query('CALL set_key(?, ?, ?, ?)', [c.nsId, c.key, c.value, c.expire]), (err: Error & { sqlState?: string }) => {
      assert.equal(err.sqlState, '45000');
      assert.match(err.message, c.message);
      return true;
    });
  });
});

describe('inserted directly: dead-lettered with the reason, good rows around it replicated', () => {
  for (const c of cases) test(c.name, async () => {
    const before = env.key('good-before');
    const afterKey = env.key('good-after');
    const dlBefore = (await deadLetters()).length;
    // One statement: good row, bad row, good row.
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (1, ?, ?, 0), (?, ?, ?, ?), (1, ?, ?, 0)', [
      before, 'B', c.nsId, c.key, c.value, c.expire, afterKey, 'A',
    ]);
    const dl = await waitFor(async () => {
      const all = await deadLetters();
      return all.length > dlBefore ? all[0] : undefined;
    }, { message: 'the dead letter' });
    assert.equal(dl!.stage, 'tailer');
    assert.match(dl!.reason, c.message);
    assert.ok(dl!.source, 'names the source transaction');
    await waitFor(async () => (await env.readEverywhere(afterKey)).every((v) => v?.toString() === 'A'), { message: 'the good row after it' });
    for (const v of await env.readEverywhere(before)) assert.equal(v?.toString(), 'B');
    // (Only for keys a text-protocol client can ask for at all.)
    if (c.key !== null && !keyProblem(Buffer.from(c.key))) {
      assert.deepEqual(await env.readEverywhere(c.key), [null, null, null, null], 'the bad row reached no server');
    }
  });
});

test('a bad row for a key that has a value deletes it everywhere instead of leaving the old value', async () => {
  const k = env.key('stale-guard');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'old'), { message: 'old value' });
  await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (1, ?, ?, -1)', [k, 'new']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v === null), { message: 'the key deleted everywhere' });
  const dl = (await deadLetters()).find((d) => d.op.key === k);
  assert.match(dl!.reason, /expire is -1/);
  assert.equal(dl!.action, 'key deleted everywhere instead');
});

test('a row the trigger could not check (UPDATE-free engine aside) is still validated by the tailer: unknown op', async () => {
  const afterKey = env.key('after-unknown-op');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (1, 'x', 'frobnicate')");
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
  await waitFor(async () => (await env.readEverywhere(afterKey)).every((v) => v?.toString() === 'ok'), { message: 'good row after' });
  const dl = (await deadLetters()).find((d) => /unknown op 'frobnicate'/.test(d.reason));
  assert.ok(dl, 'dead-lettered with its reason');
});

test('rows of a two-phase XA transaction are dead-lettered, not applied; the pipeline goes on', async () => {
  const k = env.key('xa');
  const afterKey = env.key('after-xa');
  const xid = `'${env.id}-xa'`;
  await env.sql.query(`XA START ${xid}`);
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'xa-value']);
  await env.sql.query(`XA END ${xid}`);
  await env.sql.query(`XA PREPARE ${xid}`);
  await env.sql.query(`XA COMMIT ${xid}`);
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
  await waitFor(async () => (await env.readEverywhere(afterKey)).every((v) => v?.toString() === 'ok'), { message: 'good row after' });
  const dl = (await deadLetters()).find((d) => /two-phase XA/.test(d.reason));
  assert.ok(dl, 'dead-lettered with its reason');
  assert.equal(dl.op.key, k);
  assert.deepEqual(await env.readEverywhere(k), [null, null, null, null]);
});

test('op names are case-insensitive in a direct INSERT, and the registry agrees with memcached', async () => {
  const k = env.key('upper');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, op) VALUES (1, ?, 'up', 'SET')", [k]);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'up'), { message: 'SET applied' });
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k]);
  assert.equal(Number(rows[0]!.n), 1);
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (1, ?, 'Delete')", [k]);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v === null), { message: 'Delete applied' });
  const [after] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k]);
  assert.equal(Number(after[0]!.n), 0);
  // A near miss is refused by both sides alike: not registered, dead-lettered.
  const k2 = env.key('near-miss');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, op) VALUES (1, ?, 'x', 'set ')", [k2]);
  await waitFor(async () => (await deadLetters()).some((d) => d.op.key === k2 && /unknown op 'set '/.test(d.reason)), { message: 'near miss dead-lettered' });
  const [nm] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k2]);
  assert.equal(Number(nm[0]!.n), 0);
});
