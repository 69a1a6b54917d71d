/**
 * zongji never reconnects by itself: when the binlog connection dies (here: its dump thread is
 * killed on the server), the tailer starts a new stream from where it was, and no write is lost
 * or applied twice out of order.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv();
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'reconnect')");
});
after(async () => env?.teardown());

async function dumpThreads(): Promise<number[]> {
  const [rows] = await env.root.query<RowDataPacket[]>("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%' AND USER = ?", [env.config.mysql.tailer!.user]);
  return rows.map((r) => Number(r.ID));
}

test('a killed binlog dump thread is replaced and every write still arrives', async () => {
  const tag = env.key('rc');
  const before = await dumpThreads();
  assert.ok(before.length >= 1, 'the tailer streams the binlog');
  for (let i = 0; i < 200; i++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [`${tag}:${i}`, `v${i}`]);
  for (const id of before) await env.root.query(`KILL ${id}`);
  // Writes go on while the tailer reconnects.
  for (let i = 200; i < 400; i++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [`${tag}:${i}`, `v${i}`]);
  const after = await waitFor(async () => {
    const now = await dumpThreads();
    return now.length > 0 && now.every((id) => !before.includes(id)) ? now : undefined;
  }, { message: 'a new dump thread' });
  assert.ok(after.length >= 1);
  await waitFor(async () => {
    for (let i = 0; i < 400; i += 1) {
      if (!(await env.readEverywhere(`${tag}:${i}`)).every((v) => v?.toString() === `v${i}`)) return false;
    }
    return true;
  }, { timeoutMs: 20_000, message: 'all 400 writes on every server' });
});
