/**
 * The main path against real MariaDB, Redis and memcached: set, overwrite, delete, flush of one
 * namespace, a plain INSERT into the storage table, and values that must arrive byte for byte.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { createTestEnv, waitForFlush, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';
import { connectMysql } from '../../src/registry/mysql.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv();
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'users')");
  await env.sql.query("CALL create_namespace(2, 'sessions')");
});
after(async () => env?.teardown());

/** Waits until every server holds `expected` (null = absent) for the key. */
async function expectEverywhere(key: string | Buffer, expected: Buffer | string | null, timeoutMs = 5_000): Promise<void> {
  const want = expected === null ? null : Buffer.from(expected);
  await waitFor(
    async () => {
      const got = await env.readEverywhere(key);
      return got.every((g) => (want === null ? g === null : g !== null && g.equals(want)));
    },
    { timeoutMs, message: () => `${String(key).slice(0, 60)} = ${want === null ? 'absent' : `${want.length} bytes`} on every server` },
  );
}

async function registry(key: string | Buffer): Promise<RowDataPacket | undefined> {
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT * FROM mc_stored_keys WHERE mc_key = ?', [Buffer.from(key)]);
  return rows[0];
}

describe('set, overwrite, delete', () => {
  test('a set reaches every server, an overwrite replaces it, a delete removes it', async () => {
    const k = env.key('sod');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v1']);
    await expectEverywhere(k, 'v1');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v2']);
    await expectEverywhere(k, 'v2');
    assert.equal((await registry(k))?.value_len, 2);
    await env.sql.query('CALL delete_key(1, ?)', [k]);
    await expectEverywhere(k, null);
    assert.equal(await registry(k), undefined, 'the registry forgets a deleted key');
  });

  test('several writes in one transaction arrive, and a rolled-back transaction writes nothing', async () => {
    const [a, b, c] = [env.key('txn'), env.key('txn'), env.key('rolledback')];
    await env.sql.query('START TRANSACTION');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [a, 'A']);
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [b, 'B']);
    await env.sql.query('COMMIT');
    await env.sql.query('START TRANSACTION');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [c, 'never']);
    await env.sql.query('ROLLBACK');
    const sentinel = env.key('after-rollback');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'S']);
    await expectEverywhere(a, 'A');
    await expectEverywhere(b, 'B');
    await expectEverywhere(sentinel, 'S');
    assert.deepEqual(await env.readEverywhere(c), [null, null, null, null], 'rolled back: not in memcached');
    assert.equal(await registry(c), undefined, 'rolled back: not in the registry');
  });
});

describe('flush', () => {
  // Chunks of 5000 keys (the default is 10000), so a few thousand keys make two.
  before(async () => env.root.query("INSERT INTO mc_settings (name, value) VALUES ('flush_chunk_keys', '5000')"));

  test('flushing a namespace removes its keys everywhere and leaves other namespaces alone', async () => {
    const users = Array.from({ length: 30 }, () => env.key('user'));
    const sessions = Array.from({ length: 10 }, () => env.key('session'));
    for (const k of users) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `u-${k}`]);
    for (const k of sessions) await env.sql.query('CALL set_key(2, ?, ?, 0)', [k, `s-${k}`]);
    for (const k of [...users, ...sessions]) await expectEverywhere(k, k.includes(':user:') ? `u-${k}` : `s-${k}`);

    const [res] = await env.sql.query<RowDataPacket[][]>("CALL flush_namespace_by_name('users')");
    const { key_count: keyCount } = res[0]![0]!;
    assert.ok(Number(keyCount) >= users.length, `flush counted ${keyCount} keys`);
    await waitForFlush(env, res[0]![0]!);
    // The flush is reported done only once every data center applied it: nothing left to wait for.
    for (const k of users) assert.deepEqual(await env.readEverywhere(k), [null, null, null, null], `${k} gone everywhere`);
    for (const k of sessions) for (const v of await env.readEverywhere(k)) assert.equal(v?.toString(), `s-${k}`);
    const [left] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = 1');
    assert.equal(Number(left[0]!.n), 0, 'registry of the flushed namespace is empty');
  });

  test('a flush bigger than one chunk (5000 keys) deletes them all', async () => {
    await env.sql.query("CALL create_namespace(3, 'bulk')");
    const tag = env.key('bulk');
    // 6000 keys in one statement through the trigger, as a plain INSERT ... SELECT.
    await env.sql.query(
      `INSERT INTO mc_storage (ns_id, mc_key, mc_value)
       WITH RECURSIVE d (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 99)
       SELECT 3, CONCAT(?, ':', a.n * 100 + b.n), CONCAT('v', a.n * 100 + b.n) FROM d a, d b WHERE a.n < 60`,
      [tag],
    );
    const [cnt] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = 3');
    assert.equal(Number(cnt[0]!.n), 6000);
    await expectEverywhere(`${tag}:5999`, 'v5999');
    const [res] = await env.sql.query<RowDataPacket[][]>('CALL flush_namespace(3)');
    assert.equal(Number(res[0]![0]!.key_count), 6000);
    await waitForFlush(env, res[0]![0]!, 30_000);
    for (const i of [0, 1, 2500, 4999, 5000, 5001, 5999]) assert.deepEqual(await env.readEverywhere(`${tag}:${i}`), [null, null, null, null], `key ${i}`);
  });

  test('a key another namespace sets while the flush runs is left alone', async () => {
    await env.sql.query("CALL create_namespace(4, 'racer')");
    const k = env.key('contested');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v1']);
    await expectEverywhere(k, 'v1');
    // Namespace 2 takes the key in a transaction that stays open while the flush starts.
    const other = await connectMysql(env.config.mysql);
    try {
      await other.query('START TRANSACTION');
      await other.query('CALL set_key(2, ?, ?, 0)', [k, 'v2']);
      const flushing = env.sql.query<RowDataPacket[][]>('CALL flush_namespace(1)');
      // The flush's chunk waits for the row lock of that transaction. (MariaDB does not always
      // show that wait as 'LOCK WAIT' in INNODB_TRX: a chunk of a few keys still running after
      // a second is waiting too.)
      const observer = await connectMysql(env.config.mysql);
      try {
        await waitFor(async () => {
          const [w] = await observer.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'");
          const [c] = await observer.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO mc_flush_chunk%' AND TIME >= 1");
          return Number(w[0]!.n) > 0 || Number(c[0]!.n) > 0;
        }, { message: 'the flush to wait for the lock' });
      } finally {
        await observer.end();
      }
      await other.query('COMMIT');
      const [res] = await flushing;
      assert.equal(Number(res[0]![0]!.key_count), 0, 'the key now belongs to namespace 2: not deleted');
      await waitForFlush(env, res[0]![0]!);
      for (const v of await env.readEverywhere(k)) assert.equal(v?.toString(), 'v2');
      const [reg] = await env.root.query<RowDataPacket[]>('SELECT ns_id FROM mc_stored_keys WHERE mc_key = ?', [k]);
      assert.equal(reg[0]?.ns_id, 2);
    } finally {
      await other.end();
    }
  });
  test('a key another namespace takes after the flush started, but before its chunk, is left alone', async () => {
    await env.sql.query("CALL create_namespace(5, 'big-ns')");
    const tag = env.key('chunked');
    await env.sql.query(
      `INSERT INTO mc_storage (ns_id, mc_key, mc_value)
       WITH RECURSIVE d (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 99)
       SELECT 5, CONCAT(?, ':', a.n * 100 + b.n), 'x' FROM d a, d b WHERE a.n < 60`,
      [tag],
    );
    // Sorts after every other key of the namespace: it is in the second chunk.
    const k = `${env.prefix}:~last`;
    await env.sql.query('CALL set_key(5, ?, ?, 0)', [k, 'v5']);
    await expectEverywhere(k, 'v5');
    const flushing = env.sql.query<RowDataPacket[][]>('CALL flush_namespace(5)');
    const peek = await connectMysql(env.config.mysql);
    try {
      // Once the first chunk is being deleted (visible to a dirty read), the flush is under way.
      await peek.query('SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED');
      await waitFor(async () => {
        const [r] = await peek.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = 5');
        return Number(r[0]!.n) < 6001;
      }, { intervalMs: 2, message: 'the first chunk under way' });
      await peek.query('CALL set_key(2, ?, ?, 0)', [k, 'taken']);
    } finally {
      await peek.end();
    }
    const [res] = await flushing;
    await waitForFlush(env, res[0]![0]!, 30_000);
    for (const v of await env.readEverywhere(k)) assert.equal(v?.toString(), 'taken');
    assert.deepEqual(await env.readEverywhere(`${tag}:5999`), [null, null, null, null]);
  });
});

describe('plain INSERT into the storage table', () => {
  test('an INSERT (original column list) is replicated and registered by the trigger', async () => {
    const k = env.key('insert');
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, ?, ?)', [k, 'inserted']);
    await expectEverywhere(k, 'inserted');
    const r = await registry(k);
    assert.ok(r, 'registered by the trigger');
    assert.equal(r.ns_id, 1);
    assert.equal(Buffer.from(r.value_md5).toString('hex'), createHash('md5').update('inserted').digest('hex'));
    await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (1, ?, 'delete')", [k]);
    await expectEverywhere(k, null);
    assert.equal(await registry(k), undefined);
  });
});

describe('exact bytes', () => {
  test('binary with every byte value, empty, utf8mb4, and a 900 KB value arrive byte for byte', async () => {
    const every = Buffer.from(Array.from({ length: 256 * 4 }, (_, i) => i % 256));
    const utf8 = 'emoji 😀🚀, CJK 漢字, RTL עברית, combining é';
    const big = Buffer.alloc(900 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 8)) & 0xff;
    const cases: [string, Buffer][] = [
      [env.key('bin'), every],
      [env.key('empty'), Buffer.alloc(0)],
      [env.key('utf8'), Buffer.from(utf8, 'utf8')],
      [env.key('big'), big],
    ];
    for (const [k, v] of cases) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, v]);
    // A utf8mb4 key, too (it is bytes to memcached).
    const utf8Key = `${env.prefix}:ключ:😀`;
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [utf8Key, 'unicode key']);
    for (const [k, v] of cases) await expectEverywhere(k, v, 10_000);
    await expectEverywhere(utf8Key, 'unicode key');
    const r = await registry(cases[3]![0]);
    assert.equal(r?.value_len, big.length);
  });
});
