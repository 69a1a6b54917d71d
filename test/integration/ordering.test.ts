/**
 * Per-key order: many writers hammer a few keys; MySQL's commit order is made observable with
 * a sequence number taken under a row lock in the same transaction as the write, so the last
 * committed op of each key is the one with the highest sequence number. Every server must end
 * with exactly that, and while it runs no server may ever show a key going backwards.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { connectMysql } from '../../src/registry/mysql.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';
import { watchForRegressions } from '../helpers/regression-watcher.js';

const KEYS = 20;
const WRITERS = 4;
const WRITES_PER_WRITER = 2_600; // 10,400 writes in all

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ partitions: 4 });
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'order')");
  await env.root.query('CREATE TABLE seq_counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB');
  await env.root.query('INSERT INTO seq_counter VALUES (1, 0)');
  await env.root.query(`
    CREATE PROCEDURE test_write(IN k VARBINARY(250), IN writer INT, IN del BOOL)
    BEGIN
      DECLARE s BIGINT;
      START TRANSACTION;
      UPDATE seq_counter SET n = LAST_INSERT_ID(n + 1) WHERE id = 1;
      SET s = LAST_INSERT_ID();
      IF del THEN CALL delete_key(1, k); ELSE CALL set_key(1, k, CONCAT(s, '|', writer), 0); END IF;
      COMMIT;
      SELECT s;
    END`);
});
after(async () => env?.teardown());

test(`${WRITERS * WRITES_PER_WRITER} writes over ${KEYS} keys from ${WRITERS} connections end with each key's last committed value on every server`, async () => {
  const keys = Array.from({ length: KEYS }, (_, i) => `${env.prefix}:hot:${i}`);
  const last = new Map<string, { seq: number; value: string | null }>();

  const watcher = watchForRegressions(env.servers, keys, (v) => Number(v.split('|')[0]));

  const writers = Array.from({ length: WRITERS }, async (_, w) => {
    const conn = await connectMysql(mysqlFor(env.config.mysql, 'writer'));
    try {
      for (let i = 0; i < WRITES_PER_WRITER; i++) {
        const k = keys[Math.floor(Math.random() * KEYS)]!;
        const del = Math.random() < 0.1;
        const [res] = await conn.query<RowDataPacket[][]>('CALL test_write(?, ?, ?)', [k, w, del]);
        const seq = Number(res[0]![0]!.s);
        const prev = last.get(k);
        if (!prev || prev.seq < seq) last.set(k, { seq, value: del ? null : `${seq}|${w}` });
      }
    } finally {
      await conn.end();
    }
  });
  await Promise.all(writers);

  const [c] = await env.root.query<RowDataPacket[]>('SELECT n FROM seq_counter');
  assert.equal(Number(c[0]!.n), WRITERS * WRITES_PER_WRITER, 'every write committed');

  await waitFor(
    async () => {
      for (const k of keys) {
        const want = last.get(k)?.value ?? null;
        for (const v of await env.readEverywhere(k)) if ((v?.toString() ?? null) !== want) return false;
      }
      return true;
    },
    {
      timeoutMs: 60_000,
      intervalMs: 100,
      message: () => `every server to hold each key's last committed value`,
    },
  );
  const { regressions, observations } = await watcher.stop();
  assert.deepEqual(regressions, [], 'no server ever showed a key going back to an older value');
  assert.ok(observations > 100, `the watcher made ${observations} observations`);
});
