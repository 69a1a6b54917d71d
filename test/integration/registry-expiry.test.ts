/**
 * Registry expiry (docs/decisions/0018-registry-expiry.md): the active tailer's sweeper removes
 * the registry rows of expired keys through mc_sweep_expired(), in bounded batches, without
 * producing a cache op (only mc_stored_keys rows reach the binlog), leaving live keys, keys
 * still within the grace margin and keys a concurrent set_key() refreshes alone; a flush after
 * (or during) sweeps still removes every live key everywhere; older installs get the index.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { RegistrySweeper, sweepWhileRunning } from '../../src/registry/registry-sweeper.js';
import { installAll, installSchema } from '../../src/registry/schema-installer.js';
import { Tailer } from '../../src/source/tailer.js';
import { createTestEnv, waitForFlush, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ overrides: { 'registry.sweepIntervalMs': 200, 'registry.sweepBatch': 7, 'registry.sweepGraceS': 0 } });
  await env.startWorkers();
  await env.sql.query("CALL create_namespace(1, 'swept')");
  await env.sql.query("CALL create_namespace(2, 'neighbour')");
  await env.sql.query("CALL create_namespace(3, 'flushed-while-swept')");
});
after(async () => env?.teardown());

const ABSENT = [null, null, null, null];
const now = () => Math.floor(Date.now() / 1000);
const deadLetterCount = async () => Number((await env.redis.get(new RedisKeys(env.prefix).deadLetterCount)) ?? 0);

/** A sweeper of its own (as the tailer's account), run by hand. */
const sweeperWith = (over: { sweepBatch?: number; sweepGraceS?: number } = {}) =>
  new RegistrySweeper(mysqlFor(env.config.mysql, 'tailer'), { ...env.config.registry, sweepIntervalMs: 0, ...over }, env.logger.child({ c: 'sweeper' }));

async function registered(keys: string[]): Promise<Map<string, { expiresAt: number | null; md5: string }>> {
  if (keys.length === 0) return new Map();
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT mc_key, expires_at, HEX(value_md5) AS md5 FROM mc_stored_keys WHERE mc_key IN (?)', [keys.map((k) => Buffer.from(k))]);
  return new Map(rows.map((r) => [Buffer.from(r.mc_key as Buffer).toString(), { expiresAt: r.expires_at === null ? null : Number(r.expires_at), md5: String(r.md5).toLowerCase() }]));
}

async function everywhere(key: string, value: string | null, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await env.readEverywhere(key)).every((v) => (value === null ? v === null : v?.toString() === value)), {
    timeoutMs,
    message: `${key} = ${value ?? 'absent'} on every server`,
  });
}

/** Makes registry rows look expired `agoS` seconds ago (as if set long before), without a cache op. */
async function ageRows(keys: string[], agoS: number): Promise<void> {
  await env.root.query('UPDATE mc_stored_keys SET expires_at = UNIX_TIMESTAMP() - ? WHERE mc_key IN (?)', [agoS, keys.map((k) => Buffer.from(k))]);
}

async function binlogEnd(): Promise<{ file: string; pos: number }> {
  const [rows] = await env.root.query<RowDataPacket[]>('SHOW MASTER STATUS');
  return { file: String(rows[0]!.File), pos: Number(rows[0]!.Position) };
}

/** The tables of this test's database that binlog row events since `from` touched (from their table maps). */
async function tablesWrittenSince(from: { file: string; pos: number }): Promise<string[]> {
  const [rows] = await env.root.query<RowDataPacket[]>(`SHOW BINLOG EVENTS IN ? FROM ${from.pos}`, [from.file]);
  const mine = `(${env.database}.`;
  return rows
    .filter((r) => r.Event_type === 'Table_map' && String(r.Info).includes(mine))
    .map((r) => String(r.Info).slice(String(r.Info).indexOf(mine) + mine.length).replace(/\)$/, ''));
}

describe('the active tailer sweeps', () => {
  let tailer: Tailer;
  let sweeper: RegistrySweeper;
  const live: [string, string][] = [];
  const short: string[] = [];

  before(async () => {
    // Wired as `mcrepl run` / `mcrepl tailer` wire it (src/cli/commands/pipeline.ts).
    tailer = new Tailer(env.config, { logger: env.logger.child({ c: 'tailer' }) });
    sweeper = new RegistrySweeper(mysqlFor(env.config.mysql, 'tailer'), env.config.registry, env.logger.child({ c: 'sweeper' }));
    sweepWhileRunning(tailer, sweeper);
    assert.equal(sweeper.isRunning, false, 'not before the tailer holds its lease');
    await tailer.start();
    assert.equal(sweeper.isRunning, true);
  });
  after(async () => {
    await tailer?.close();
    await sweeper?.close();
  });

  test('expired registry rows disappear in batches; live rows stay; no cache op, no dead letter; only mc_stored_keys rows in the binlog', async () => {
    for (let i = 0; i < 5; i++) live.push([env.key('never'), `n${i}`]);
    for (let i = 0; i < 5; i++) live.push([env.key('hour'), `h${i}`]);
    for (let i = 0; i < 5; i++) live.push([env.key('abs'), `a${i}`]);
    for (let i = 0; i < 23; i++) short.push(env.key('short'));
    const expireOf = (k: string) => (k.includes(':never:') ? 0 : k.includes(':hour:') ? 3_600 : now() + 3_600);
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [live.map(([k, v]) => [1, k, v, expireOf(k)])]);
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [short.map((k) => [1, k, 'short', 1])]);
    // Once this is everywhere, the tailer has read every write above.
    const sentinel = env.key('sentinel');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [sentinel, 'S']);
    live.push([sentinel, 'S']);
    for (const [k, v] of live) await everywhere(k, v);
    await waitFor(async () => (await env.backlog()) === 0, { message: 'queues drained' });
    const ops = tailer.stats.ops;
    const jobs = tailer.stats.jobs;
    const dead = await deadLetterCount();
    const from = await binlogEnd();

    // TTL 1 s, grace 0, a sweep every 200 ms of at most 7 rows per batch.
    await waitFor(async () => (await registered(short)).size === 0, { timeoutMs: 10_000, message: 'the expired keys gone from the registry' });
    assert.ok(sweeper.stats.removed >= short.length, `${sweeper.stats.removed} removed`);
    assert.ok(sweeper.stats.sweeps >= 1);

    const left = await registered(live.map(([k]) => k));
    assert.deepEqual([...left.keys()].sort(), live.map(([k]) => k).sort(), 'every live key is still registered');
    for (const [k, v] of live) assert.deepEqual((await env.readEverywhere(k)).map((b) => b?.toString()), [v, v, v, v], `${k} untouched in memcached`);
    assert.equal(tailer.stats.ops, ops, 'the tailer read no cache op');
    assert.equal(tailer.stats.jobs, jobs, 'nothing was enqueued');
    assert.equal(await env.backlog(), 0);
    assert.equal(await deadLetterCount(), dead, 'nothing dead-lettered');
    const tables = await tablesWrittenSince(from);
    assert.ok(tables.length > 0, 'the sweep wrote row events');
    assert.deepEqual([...new Set(tables)], ['mc_stored_keys'], 'only registry rows, never mc_storage');
    assert.equal(tailer.state, 'running');
  });

  test('a flush after the sweep still removes every live key everywhere, and only those', async () => {
    const neighbour = env.key('neighbour');
    await env.sql.query('CALL set_key(2, ?, ?, 0)', [neighbour, 'N']);
    await everywhere(neighbour, 'N');
    const [results] = await env.sql.query<RowDataPacket[][]>('CALL flush_namespace(1)');
    const flush = results[0]![0]!;
    assert.equal(Number(flush.key_count), live.length, 'the flush found exactly the live keys');
    await waitForFlush(env, flush);
    for (const [k] of live) assert.deepEqual(await env.readEverywhere(k), ABSENT, `${k} flushed everywhere`);
    assert.equal((await registered(live.map(([k]) => k))).size, 0);
    assert.deepEqual((await env.readEverywhere(neighbour)).map((b) => b?.toString()), ['N', 'N', 'N', 'N']);
    assert.equal((await registered([neighbour])).size, 1);
  });

  test('the sweeper stops with the tailer', async () => {
    await tailer.close();
    assert.equal(sweeper.isRunning, false);
    await sweeper.close();
  });
});

describe('mc_sweep_expired()', () => {
  let tailer: Tailer;
  before(async () => {
    tailer = await env.startTailer(); // without a sweeper: the tests below sweep by hand
  });

  test('keeps keys within the grace margin, and works through many rows in bounded batches', async () => {
    const keys = Array.from({ length: 10 }, () => env.key('old'));
    const recent = Array.from({ length: 2 }, () => env.key('recent'));
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [[...keys, ...recent].map((k) => [1, k, 'v', 0])]);
    await waitFor(async () => (await registered([...keys, ...recent])).size === 12, { message: 'registered' });
    await ageRows(keys, 7_200);
    await ageRows(recent, 100);
    const s = sweeperWith({ sweepBatch: 3, sweepGraceS: 3_600 });
    try {
      const r = await s.sweep();
      assert.equal(r.removed, 10);
      assert.equal(r.batches, 4, '3 + 3 + 3 + 1');
      assert.equal((await registered(keys)).size, 0);
      assert.equal((await registered(recent)).size, 2, 'expired 100 s ago, within the 3600 s grace');
      assert.equal((await s.sweep()).removed, 0);
    } finally {
      await s.close();
    }
  });

  test('refuses a batch size or grace out of range', async () => {
    const tailerConn = await connectMysql(mysqlFor(env.config.mysql, 'tailer'));
    try {
      for (const [args, message] of [
        [[0, 0], /^batch size 0 is out of range; give 1 to 100000 rows$/],
        [[100_001, 0], /^batch size 100001 is out of range/],
        [[null, 0], /^batch size NULL is out of range/],
        [[10, -1], /^grace -1 is not a number of seconds \(0 or more\)$/],
      ] as const) {
        await assert.rejects(tailerConn.query('CALL mc_sweep_expired(?, ?)', [...args]), (err: Error & { sqlState?: string }) => {
          assert.equal(err.sqlState, '45000');
          assert.match(err.message, message);
          return true;
        });
      }
    } finally {
      await tailerConn.end();
    }
  });

  test('a set_key() holding the row (refreshing its expiry) is skipped, never waited for; its fresh row stays', async () => {
    const k = env.key('held');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
    await everywhere(k, 'old');
    await ageRows([k], 10_000);
    const w: Connection = await connectMysql(mysqlFor(env.config.mysql, 'writer'));
    const s = sweeperWith();
    try {
      await w.query('START TRANSACTION');
      await w.query('CALL set_key(1, ?, ?, 3600)', [k, 'fresh']);
      const started = Date.now();
      const r = await s.sweep();
      assert.ok(Date.now() - started < 5_000, `the sweep did not wait for the lock (${Date.now() - started} ms)`);
      assert.ok(r.batches >= 1);
      assert.equal((await registered([k])).size, 1, 'the locked row was skipped (its committed, aged version is still there)');
      await w.query('COMMIT');
    } finally {
      await w.end();
      await s.close();
    }
    const row = (await registered([k])).get(k);
    assert.ok(row && row.expiresAt !== null && row.expiresAt > now() + 3_000, JSON.stringify(row));
    await everywhere(k, 'fresh');
  });

  test('set_key() racing the sweep on the same key, many times: the fresh row always stays', async () => {
    const k = env.key('race');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v0']);
    const s = sweeperWith({ sweepBatch: 100 });
    const w = await connectMysql(mysqlFor(env.config.mysql, 'writer'));
    let removedTotal = 0;
    try {
      for (let i = 1; i <= 40; i++) {
        await ageRows([k], 10_000);
        const [r] = await Promise.all([s.sweep(), w.query('CALL set_key(1, ?, ?, 3600)', [k, `v${i}`])]);
        removedTotal += r.removed;
        const row = (await registered([k])).get(k);
        assert.ok(row, `round ${i}: the row is there`);
        assert.ok(row.expiresAt !== null && row.expiresAt > now() + 3_000, `round ${i}: with the fresh expiry (${row.expiresAt})`);
        assert.equal(row.md5, createHash('md5').update(`v${i}`).digest('hex'), `round ${i}: of the fresh value`);
      }
    } finally {
      await w.end();
      await s.close();
    }
    await everywhere(k, 'v40');
    // Both orders happened if some rounds removed the aged row (the set then inserted it anew).
    assert.ok(removedTotal <= 40);
  });

  test('flushes running while sweeps remove rows of the same namespace succeed (no deadlock) and remove every live key everywhere', async () => {
    // Found a deadlock between a flush chunk and a sweep that locked rows through expires_at
    // (see sql/040_registry_expiry.sql); a few rounds make such a race likely to show.
    await env.root.query("REPLACE INTO mc_settings (name, value) VALUES ('flush_chunk_keys', '5')");
    try {
      for (let round = 0; round < 4; round++) {
        const liveKeys = Array.from({ length: 40 }, (_, i) => env.key(`fl${round}-${String(i).padStart(2, '0')}`));
        // Interleaved with the live keys in key order, so flush chunks and sweep batches cross.
        const aged = liveKeys.map((k) => `${k}x`);
        await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [[...liveKeys, ...aged].map((k) => [3, k, 'v', 0])]);
        for (const k of [...liveKeys, ...aged]) await everywhere(k, 'v');
        await ageRows(aged, 10_000);
        const s = sweeperWith({ sweepBatch: 5 });
        let flushing = true;
        try {
          const sweeps = (async () => {
            let n = 0;
            while (flushing) n += (await s.sweep()).removed;
            return n;
          })();
          const [results] = await env.sql.query<RowDataPacket[][]>('CALL flush_namespace(3)').finally(() => (flushing = false));
          const swept = await sweeps;
          const flush = results[0]![0]!;
          await waitForFlush(env, flush);
          const flushed = Number(flush.key_count);
          assert.ok(flushed >= liveKeys.length && flushed <= liveKeys.length + aged.length, `key_count ${flushed}`);
          assert.equal(swept + (await s.sweep()).removed + (flushed - liveKeys.length), aged.length, 'each aged row went once, by the flush or a sweep');
        } finally {
          flushing = false;
          await s.close();
        }
        for (const k of liveKeys) assert.deepEqual(await env.readEverywhere(k), ABSENT, `${k} flushed everywhere`);
        assert.equal((await registered([...liveKeys, ...aged])).size, 0);
      }
    } finally {
      await env.root.query("DELETE FROM mc_settings WHERE name = 'flush_chunk_keys'");
    }
    assert.equal(tailer.state, 'running');
  });
});

describe('schema install', () => {
  test('adds the expires_at index to an older install, keeps its rows, and a second install changes nothing; the tailer account keeps EXECUTE', async () => {
    const db = `${env.database}_old`;
    const conn = await connectMysql(env.config.mysql, { database: false });
    try {
      await conn.query(`CREATE DATABASE \`${db}\``);
      // mc_stored_keys as versions before the index created it.
      await conn.query(`CREATE TABLE \`${db}\`.mc_stored_keys (
        mc_key VARBINARY(250) NOT NULL PRIMARY KEY, ns_id INT NOT NULL,
        created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        expire BIGINT NOT NULL DEFAULT 0, expires_at BIGINT NULL, value_len INT UNSIGNED NOT NULL, value_md5 BINARY(16) NOT NULL,
        KEY ns_key (ns_id, mc_key)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
      await conn.query(`INSERT INTO \`${db}\`.mc_stored_keys (mc_key, ns_id, expires_at, value_len, value_md5) VALUES ('kept', 1, 5, 1, UNHEX(MD5('v')))`);
      const indexes = async () => {
        const [rows] = await conn.query<RowDataPacket[]>(`SHOW INDEX FROM \`${db}\`.mc_stored_keys`);
        return [...new Set(rows.map((r) => String(r.Key_name)))].sort();
      };
      assert.deepEqual(await indexes(), ['PRIMARY', 'ns_key']);
      await installSchema(conn, db);
      assert.deepEqual(await indexes(), ['PRIMARY', 'expires_at', 'ns_key']);
      await installSchema(conn, db);
      assert.deepEqual(await indexes(), ['PRIMARY', 'expires_at', 'ns_key']);
      const [rows] = await conn.query<RowDataPacket[]>(`SELECT mc_key, expires_at FROM \`${db}\`.mc_stored_keys`);
      assert.deepEqual(rows.map((r) => [Buffer.from(r.mc_key as Buffer).toString(), Number(r.expires_at)]), [['kept', 5]]);
      const [procs] = await conn.query<RowDataPacket[]>("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND ROUTINE_NAME = 'mc_upgrade_tables'", [db]);
      assert.equal(procs.length, 0, 'the upgrade procedure is dropped after use');

      // Reinstalling drops and re-creates mc_sweep_expired (which drops grants on it); the
      // account installer grants it again.
      await installAll(conn, env.config);
      const t = await connectMysql(mysqlFor(env.config.mysql, 'tailer'));
      try {
        const [r] = await t.query<RowDataPacket[][]>('CALL mc_sweep_expired(1, 600)');
        assert.ok(Number(r[0]![0]!.removed) >= 0);
      } finally {
        await t.end();
      }
    } finally {
      await conn.query(`DROP DATABASE IF EXISTS \`${db}\``).catch(() => undefined);
      await conn.end();
    }
  });
});
