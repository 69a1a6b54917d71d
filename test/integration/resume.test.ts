/**
 * Resume: the tailer (the real CLI process) is stopped with SIGTERM and, separately, killed with
 * SIGKILL in the middle of a stream of writes, then restarted. Every write arrives, and no key
 * ever goes back to an older value while the replay after the kill is applied.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';
import { watchForRegressions } from '../helpers/regression-watcher.js';

let env: TestEnv;
let configFile: string;
before(async () => {
  env = await createTestEnv({ partitions: 4 });
  configFile = writeConfigFile(env.config);
  await env.startWorkers();
  await env.sql.query("CALL create_namespace(1, 'resume')");
});
after(async () => env?.teardown());

async function startTailer(): Promise<McreplProcess> {
  const p = new McreplProcess(['-c', configFile, 'tailer']);
  await p.waitForOutput(/"msg":"mcrepl ready"/);
  return p;
}

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  test(`${signal} of the tailer in the middle of a stream of writes loses nothing`, async () => {
    const tag = `${env.key(signal)}`;
    const hot = Array.from({ length: 5 }, (_, i) => `${tag}:hot:${i}`);
    const TOTAL = 3_000;
    let tailer = await startTailer();

    let written = 0;
    const hotLast = new Map<string, number>();
    const writer = (async () => {
      const conn = await connectMysql(mysqlFor(env.config.mysql, 'writer'));
      try {
        for (let i = 0; i < TOTAL; i++) {
          await conn.query('CALL set_key(1, ?, ?, 0)', [`${tag}:${i}`, `v${i}`]);
          const h = hot[i % hot.length]!;
          await conn.query('CALL set_key(1, ?, ?, 0)', [h, String(i)]);
          hotLast.set(h, i);
          written = i + 1;
        }
      } finally {
        await conn.end();
      }
    })();

    // Watch the hot keys: a replay must never move one back.
    const watcher = watchForRegressions(env.servers, hot, Number);

    await waitFor(() => written >= 800, { timeoutMs: 30_000, message: '800 writes' });
    tailer.kill(signal);
    const { code, signal: got } = await tailer.exited;
    if (signal === 'SIGTERM') assert.equal(code, 0, `clean exit on SIGTERM; stderr: ${tailer.stderr}`);
    else assert.equal(got, 'SIGKILL');
    const writtenWhileDown = written;
    // Writes go on while no tailer runs; the restart must pick them all up.
    await waitFor(() => written >= writtenWhileDown + 300, { timeoutMs: 30_000, message: 'writes while the tailer is down' });
    tailer = await startTailer();
    await writer;
    await waitFor(
      async () => {
        for (const i of [0, 799, 800, writtenWhileDown, writtenWhileDown + 1, TOTAL - 1]) {
          if (!(await env.readEverywhere(`${tag}:${i}`)).every((v) => v?.toString() === `v${i}`)) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, message: 'the last writes everywhere' },
    );
    // Every single write, on every server.
    const missing: string[] = [];
    for (const server of env.servers) {
      const c = new MemcachedTextClient(server);
      try {
        for (let i = 0; i < TOTAL; i++) {
          const v = (await c.get(`${tag}:${i}`))?.value.toString();
          if (v !== `v${i}`) missing.push(`${server} ${tag}:${i} = ${v}`);
        }
      } finally {
        c.close();
      }
    }
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} writes missing`);
    await waitFor(async () => {
      for (const h of hot) if (!(await env.readEverywhere(h)).every((v) => v?.toString() === String(hotLast.get(h)))) return false;
      return true;
    }, { message: 'hot keys at their last value' });
    const { regressions, observations } = await watcher.stop();
    assert.deepEqual(regressions, [], 'no key went back to an older value');
    assert.ok(observations > 0);

    const [rows] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key LIKE ?', [`${tag}:%`]);
    assert.equal(Number(rows[0]!.n), TOTAL + hot.length);
    tailer.kill('SIGTERM');
    assert.equal((await tailer.exited).code, 0);
  });
}
