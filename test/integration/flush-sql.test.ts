/**
 * flush_namespace() on the SQL side (docs/decisions/0012-flush-bypasses-the-trigger.md): it
 * deletes each chunk's keys from the registry itself and writes delete rows carrying the flush
 * id, which the trigger passes through while @mc_flush_id holds that id. Checked here: the
 * registry and every memcached server end up right, other namespaces are untouched (also when
 * their keys sort between the flushed ones), @mc_flush_id never outlives the call, a direct
 * INSERT only skips the trigger when it matches the session's own @mc_flush_id, and sets racing
 * a flush end consistent with the registry.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import type { DeadLetter } from '../../src/fanout/dead-letters.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { createTestEnv, waitForFlush, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

/** Small chunks, so a few dozen keys make several. */
const CHUNK = 5;

let env: TestEnv;
before(async () => {
  env = await createTestEnv();
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'flushed')");
  await env.sql.query("CALL create_namespace(2, 'neighbour')");
  await env.root.query("INSERT INTO mc_settings (name, value) VALUES ('flush_chunk_keys', ?)", [String(CHUNK)]);
});
after(async () => env?.teardown());

const ABSENT = [null, null, null, null];

/** A writer-account connection of its own (session variables, isolation level, blocking calls). */
const writer = () => connectMysql(mysqlFor(env.config.mysql, 'writer'));

async function registry(keys: string[]): Promise<Map<string, number>> {
  if (keys.length === 0) return new Map();
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT mc_key, ns_id FROM mc_stored_keys WHERE mc_key IN (?)', [keys.map((k) => Buffer.from(k))]);
  return new Map(rows.map((r) => [Buffer.from(r.mc_key as Buffer).toString(), Number(r.ns_id)]));
}

async function userVar(conn: Connection): Promise<unknown> {
  const [rows] = await conn.query<RowDataPacket[]>('SELECT @mc_flush_id AS v');
  return rows[0]!.v;
}

/** Waits until every server holds `value` for the key (null = absent). */
async function everywhere(key: string, value: string | null, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await env.readEverywhere(key)).every((v) => (value === null ? v === null : v?.toString() === value)), {
    timeoutMs,
    message: `${key} = ${value ?? 'absent'} on every server`,
  });
}

async function setAll(nsId: number, keys: string[], value: (k: string) => string): Promise<void> {
  await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES ?', [keys.map((k) => [nsId, k, value(k)])]);
  for (const k of keys) await everywhere(k, value(k));
}

/**
 * How many of these connections wait for a row lock. InnoDB refreshes what INNODB_TRX shows
 * only when it was not read for 100 ms (MariaDB), so a quick poll would keep reading a stale
 * picture: each call first lets that time pass.
 */
async function lockWaits(observer: Connection, conns: Connection[]): Promise<number> {
  await new Promise((r) => setTimeout(r, 150));
  const [w] = await observer.query<RowDataPacket[]>(
    "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_mysql_thread_id IN (?)",
    [conns.map((c) => c.threadId)],
  );
  return Number(w[0]!.n);
}

const deadLetterCount = async () => Number((await env.redis.get(new RedisKeys(env.prefix).deadLetterCount)) ?? 0);

describe('flush_namespace', () => {
  test('removes the namespace from the registry and every server, over several chunks; a neighbour whose keys sort in between is untouched', async () => {
    const P = `${env.prefix}:mix`;
    // 23 keys: five chunks of 5, the last one short. Namespace 2's keys sort between them, so
    // every chunk's key range holds keys of both namespaces.
    const ns1 = Array.from({ length: 23 }, (_, i) => `${P}:${String(i).padStart(2, '0')}`);
    const ns2 = ns1.map((k) => `${k}:n2`);
    await setAll(1, ns1, (k) => `one-${k}`);
    await setAll(2, ns2, (k) => `two-${k}`);
    const dlBefore = await deadLetterCount();

    const [res] = await env.sql.query<RowDataPacket[][]>('CALL flush_namespace(1)');
    const row = res[0]![0]!;
    assert.equal(Number(row.key_count), ns1.length);
    const [fl] = await env.root.query<RowDataPacket[]>('SELECT key_count FROM mc_flushes WHERE flush_id = ?', [row.flush_id]);
    assert.equal(Number(fl[0]!.key_count), ns1.length);
    assert.equal(await userVar(env.sql), null, '@mc_flush_id is cleared');

    const [left] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = 1');
    assert.equal(Number(left[0]!.n), 0, 'no key of the namespace left in the registry');
    const reg2 = await registry(ns2);
    assert.equal(reg2.size, ns2.length, 'every key of namespace 2 still registered');
    assert.ok([...reg2.values()].every((ns) => ns === 2));

    await waitForFlush(env, row);
    for (const k of ns1) assert.deepEqual(await env.readEverywhere(k), ABSENT, `${k} deleted everywhere`);
    for (const k of ns2) for (const v of await env.readEverywhere(k)) assert.equal(v?.toString(), `two-${k}`);

    // The delete rows reached the tailer as plain deletes: none was dead-lettered.
    assert.equal(await deadLetterCount(), dlBefore);
  });

  test('an empty namespace and an unknown one: @mc_flush_id is NULL afterwards, whatever it was before', async () => {
    const conn = await writer();
    try {
      await conn.query("CALL create_namespace(3, 'empty')");
      await conn.query('SET @mc_flush_id = 123');
      const [res] = await conn.query<RowDataPacket[][]>('CALL flush_namespace(3)');
      assert.equal(Number(res[0]![0]!.key_count), 0);
      assert.equal(await userVar(conn), null);

      await conn.query('SET @mc_flush_id = 456');
      await assert.rejects(conn.query('CALL flush_namespace(99)'), (err: { sqlState?: string; message?: string }) => {
        assert.equal(err.sqlState, '45000');
        assert.equal(err.message, 'unknown namespace 99', 'the error is raised again unchanged');
        return true;
      });
      assert.equal(await userVar(conn), null, 'cleared after the failed call');
      await assert.rejects(conn.query("CALL flush_namespace_by_name('nope')"), /unknown namespace 'nope'/);
      assert.equal(await userVar(conn), null);
    } finally {
      await conn.end();
    }
  });

  test("with autocommit off: the caller's open transaction is committed first, every chunk commits, the session's isolation level is unchanged", async () => {
    await env.sql.query("CALL create_namespace(5, 'autocommit')");
    const keys = Array.from({ length: 7 }, (_, i) => `${env.prefix}:ac:${i}`);
    await setAll(5, keys, () => 'v');
    const conn = await writer();
    try {
      await conn.query('SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE');
      await conn.query('SET autocommit = 0');
      const late = `${env.prefix}:ac:late`;
      await conn.query('CALL set_key(5, ?, ?, 0)', [late, 'v']); // left open by the caller
      const [res] = await conn.query<RowDataPacket[][]>('CALL flush_namespace(5)');
      assert.equal(Number(res[0]![0]!.key_count), keys.length + 1, 'the open transaction was committed and its key flushed');
      await conn.query('ROLLBACK'); // nothing left to roll back
      const [iso] = await conn.query<RowDataPacket[]>('SELECT @@tx_isolation AS level, @mc_flush_id AS v');
      assert.deepEqual({ ...iso[0] }, { level: 'SERIALIZABLE', v: null });
      assert.equal((await registry([...keys, late])).size, 0);
      await waitForFlush(env, res[0]![0]!);
      for (const k of [...keys, late]) assert.deepEqual(await env.readEverywhere(k), ABSENT, k);
    } finally {
      await conn.end();
    }
  });

  test('a chunk that fails (lock wait timeout) is rolled back whole, the error reaches the caller, @mc_flush_id is cleared', async () => {
    await env.sql.query("CALL create_namespace(4, 'stuck')");
    const P = `${env.prefix}:stuck`;
    const keys = Array.from({ length: 12 }, (_, i) => `${P}:${String(i).padStart(2, '0')}`);
    await setAll(4, keys, () => 'v');
    // Key 07 is in the second chunk (05..09): held by another transaction past the flush's patience.
    const holder = await connectMysql(env.config.mysql);
    const conn = await writer();
    try {
      await holder.query('START TRANSACTION');
      await holder.query('SELECT mc_key FROM mc_stored_keys WHERE mc_key = ? FOR UPDATE', [keys[7]]);
      await conn.query('SET SESSION innodb_lock_wait_timeout = 1');
      await assert.rejects(conn.query('CALL flush_namespace(4)'), (err: { errno?: number }) => {
        assert.equal(err.errno, 1205, 'ER_LOCK_WAIT_TIMEOUT, as raised inside the procedure');
        return true;
      });
      assert.equal(await userVar(conn), null, '@mc_flush_id cleared by the handler');
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
      await conn.end();
    }
    // The first chunk was committed (registry and delete rows); the second left no trace.
    const reg = await registry(keys);
    assert.deepEqual(
      keys.filter((k) => reg.has(k)),
      keys.slice(5),
      'the first chunk is deleted from the registry, the rest is not',
    );
    for (const k of keys.slice(0, 5)) await everywhere(k, null);
    for (const k of keys.slice(5)) for (const v of await env.readEverywhere(k)) assert.equal(v?.toString(), 'v', `${k} kept`);
    // A second flush finishes the job.
    const [res] = await env.sql.query<RowDataPacket[][]>('CALL flush_namespace(4)');
    assert.equal(Number(res[0]![0]!.key_count), 7);
    await waitForFlush(env, res[0]![0]!);
    for (const k of keys) assert.deepEqual(await env.readEverywhere(k), ABSENT);
  });
});

describe('direct INSERTs of delete rows that carry a flush_id', () => {
  async function registered(key: string): Promise<boolean> {
    return (await registry([key])).has(key);
  }

  test('without a matching @mc_flush_id (unset, or another id), or spelled DELETE, the trigger handles the row as usual', async () => {
    const conn = await writer();
    try {
      const cases: [string, string | null, number, string][] = [
        ['unset', null, 42, 'delete'],
        ['another id', '41', 42, 'delete'],
        ['op in capitals', '42', 42, 'DELETE'],
      ];
      for (const [label, sessionId, flushId, op] of cases) {
        const k = `${env.prefix}:direct:${label.replace(/ /g, '-')}`;
        await conn.query('CALL set_key(1, ?, ?, 0)', [k, 'x']);
        await everywhere(k, 'x');
        await conn.query('SET @mc_flush_id = ?', [sessionId]);
        await conn.query('INSERT INTO mc_storage (ns_id, mc_key, op, flush_id) VALUES (1, ?, ?, ?)', [k, op, flushId]);
        assert.equal(await registered(k), false, `${label}: the trigger removed the registry row`);
        await everywhere(k, null);
      }
    } finally {
      await conn.end();
    }
  });

  test("a session that sets @mc_flush_id itself only skips the trigger for its own rows: the key is still deleted, a bad key still dead-lettered", async () => {
    const conn = await writer();
    const other = await writer();
    try {
      const k = `${env.prefix}:direct:bypass`;
      await conn.query('CALL set_key(1, ?, ?, 0)', [k, 'x']);
      await everywhere(k, 'x');
      await conn.query('SET @mc_flush_id = 77');
      await conn.query("INSERT INTO mc_storage (ns_id, mc_key, op, flush_id) VALUES (1, ?, 'delete', 77)", [k]);
      await everywhere(k, null);
      assert.equal(await registered(k), true, 'skipped: the registry row is left behind (a redundant delete at the next flush)');

      // Another session's variable is its own: the same row there takes the normal path.
      const k2 = `${env.prefix}:direct:other-session`;
      await other.query('CALL set_key(1, ?, ?, 0)', [k2, 'y']);
      await other.query("INSERT INTO mc_storage (ns_id, mc_key, op, flush_id) VALUES (1, ?, 'delete', 77)", [k2]);
      assert.equal(await registered(k2), false);

      const dlBefore = await deadLetterCount();
      await conn.query("INSERT INTO mc_storage (ns_id, mc_key, op, flush_id) VALUES (1, 'has space', 'delete', 77)");
      const dl = await waitFor(
        async () => {
          const n = (await deadLetterCount()) - dlBefore;
          return n > 0 ? (JSON.parse((await env.redis.lindex(new RedisKeys(env.prefix).deadLetters, 0))!) as DeadLetter) : undefined;
        },
        { message: 'the dead letter' },
      );
      assert.equal(dl.stage, 'tailer');
      assert.match(dl.reason, /^key has a space at byte 4/, 'refused by the tailer itself');
    } finally {
      await conn.end();
      await other.end();
    }
  });
});

describe('sets racing a flush', () => {
  let nsId = 10;

  /**
   * Namespace with keys 00..14 (chunks 00-04, 05-09, 10-14); starts a flush on a connection of
   * its own (at the given isolation level) and holds it on key 07 (second chunk, after it has
   * locked 05 and 06) until `release` is called.
   */
  async function heldFlush(isolation: string) {
    const ns = ++nsId;
    await env.sql.query('CALL create_namespace(?, ?)', [ns, `race-${ns}`]);
    const P = `${env.prefix}:race${ns}`;
    const keys = Array.from({ length: 15 }, (_, i) => `${P}:${String(i).padStart(2, '0')}`);
    await setAll(ns, keys, () => 'old');
    const holder = await connectMysql(env.config.mysql);
    const observer = await connectMysql(env.config.mysql);
    const flusher = await writer();
    const setter = await writer();
    await flusher.query(`SET SESSION TRANSACTION ISOLATION LEVEL ${isolation}`);
    await holder.query('START TRANSACTION');
    await holder.query('SELECT mc_key FROM mc_stored_keys WHERE mc_key = ? FOR UPDATE', [keys[7]]);
    const flushing = flusher.query<RowDataPacket[][]>('CALL flush_namespace(?)', [ns]);
    flushing.catch(() => undefined); // awaited by the test
    await waitFor(async () => (await lockWaits(observer, [flusher])) === 1, { message: 'the flush to wait for key 07' });
    return {
      ns,
      keys,
      setter,
      waiting: () => lockWaits(observer, [flusher, setter]),
      release: async () => {
        await holder.query('COMMIT');
        const [res] = await flushing;
        return res[0]![0]!;
      },
      close: async () => {
        await holder.query('ROLLBACK').catch(() => undefined);
        for (const c of [holder, observer, flusher, setter]) await c.end().catch(() => undefined);
      },
    };
  }

  for (const isolation of ['REPEATABLE READ', 'READ COMMITTED']) {
    test(`(session at ${isolation}) a set of a key the chunk holds waits for the chunk, lands after its deletes, and is kept`, async () => {
      const f = await heldFlush(isolation);
      try {
        const k = f.keys[6]!;
        const setting = f.setter.query('CALL set_key(?, ?, ?, 0)', [f.ns, k, 'new']);
        await waitFor(async () => (await f.waiting()) === 2, { message: 'the set to wait for the chunk' });
        const res = await f.release();
        await setting;
        assert.equal(Number(res.key_count), f.keys.length);
        await waitForFlush(env, res);
        assert.deepEqual([...(await registry(f.keys)).entries()], [[k, f.ns]]);
        await everywhere(k, 'new');
        for (const other of f.keys.filter((x) => x !== k)) assert.deepEqual(await env.readEverywhere(other), ABSENT, other);
      } finally {
        await f.close();
      }
    });
  }

  test('(session at REPEATABLE READ) a new key set into the range of the chunk under way does not wait; the chunk is redone and takes it, registry and servers agree', async () => {
    const f = await heldFlush('REPEATABLE READ');
    try {
      // Sorts between 05 and 06, both locked by the waiting chunk: no gap lock stops it.
      const created = `${f.keys[5]}a`;
      await f.setter.query('CALL set_key(?, ?, ?, 0)', [f.ns, created, 'new']);
      assert.equal(await f.waiting(), 1, 'only the flush waits');
      const res = await f.release();
      await waitForFlush(env, res);
      // The range DELETE of the second chunk removed 6 keys for 5 locked: the chunk was rolled
      // back and redone by key, now with the new key in it. Had the new key only left the
      // registry, the servers would keep it while a later flush would not know it.
      const reg = await registry([...f.keys, created]);
      for (const k of [...f.keys, created]) assert.deepEqual(await env.readEverywhere(k), reg.has(k) ? ['new', 'new', 'new', 'new'].map((v) => Buffer.from(v)) : ABSENT, `${k}: the servers agree with the registry`);
      assert.equal(reg.size, 0, 'the redone chunk took the new key too');
      assert.equal(Number(res.key_count), f.keys.length + 1);
    } finally {
      await f.close();
    }
  });
});
