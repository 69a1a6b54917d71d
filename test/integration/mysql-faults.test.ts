/**
 * MySQL faults: the server killed and restarted, the tailer started while MySQL is down, a
 * binlog connection that dies silently, and a binlog purged past the checkpoint.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { killMariadb, startMariadb } from '../../scripts/stack.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { Tailer } from '../../src/source/tailer.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const envs: TestEnv[] = [];
after(async () => {
  // Whatever happened, the shared MariaDB must be up again for the tests after this file.
  await startMariadb(layout.mariadb);
  for (const e of envs) await e.teardown();
});

async function newEnv(overrides: Record<string, unknown> = {}): Promise<TestEnv> {
  const env = await createTestEnv({ overrides });
  envs.push(env);
  await env.sql.query("CALL create_namespace(1, 'mysql-faults')");
  return env;
}

async function everywhere(env: TestEnv, keys: string[], value: (k: string) => string, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () => {
      for (const k of keys) if (!(await env.readEverywhere(k)).every((v) => v?.toString() === value(k))) return false;
      return true;
    },
    { timeoutMs, message: `${keys.length} keys on every server` },
  );
}

describe('MySQL restart', () => {
  test('killed (-9) and restarted: the tailer reconnects, a tailer started meanwhile waits for it, nothing committed is lost', async () => {
    const env = await newEnv();
    const { tailer } = await env.startPipeline();
    const before = Array.from({ length: 100 }, () => env.key('before'));
    for (const k of before) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
    await killMariadb(layout.mariadb);
    // A second tailer started while MySQL is down waits for it (here as the standby, too).
    await tailer.close();
    const next = env.startTailer();
    await new Promise((r) => setTimeout(r, 1_000));
    await startMariadb(layout.mariadb);
    await next;
    await env.reconnectSql();
    const afterKeys = Array.from({ length: 100 }, () => env.key('after'));
    for (const k of afterKeys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `v-${k}`]);
    await everywhere(env, [...before, ...afterKeys], (k) => `v-${k}`);
  });
});

describe('a binlog connection that dies silently', () => {
  test('no event and no heartbeat for too long: the tailer reconnects and catches up', async () => {
    const proxy = new TcpProxy(layout.mariadb.port);
    await proxy.start();
    const env = await newEnv({ 'tailer.heartbeatMs': 200, 'tailer.stallTimeoutMs': 1_500 });
    try {
      const tailerConfig = structuredClone(env.config);
      tailerConfig.mysql.port = proxy.port;
      await env.startWorkers();
      const tailer = new Tailer(tailerConfig, { logger: env.logger });
      await tailer.start();
      const k1 = env.key('before-freeze');
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k1, 'a']);
      await everywhere(env, [k1], () => 'a');
      // Heartbeats flow while idle: the connection is not mistaken for dead.
      await new Promise((r) => setTimeout(r, 2_000));
      assert.ok(proxy.freeze() >= 1, 'connections frozen');
      const k2 = env.key('after-freeze');
      const written = Date.now();
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [k2, 'b']);
      await everywhere(env, [k2], () => 'b', 15_000);
      const took = Date.now() - written;
      assert.ok(took >= 1_000, `arrived after ${took} ms: only after the stall was noticed`);
      await tailer.close();
    } finally {
      await proxy.close();
    }
  });
});

describe('binlog purged past the checkpoint', () => {
  test('the tailer exits 4, saying what happened and how to recover; --reset-checkpoint starts over', async () => {
    const env = await newEnv();
    await env.startWorkers();
    const configFile = writeConfigFile(env.config);
    let tailer = new McreplProcess(['-c', configFile, 'tailer']);
    await tailer.waitForOutput(/"msg":"mcrepl ready"/);
    const k = env.key('before-purge');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'x']);
    await everywhere(env, [k], () => 'x');
    tailer.kill('SIGTERM');
    assert.equal((await tailer.exited).code, 0);

    const admin = await connectMysql(env.config.mysql, { database: false });
    try {
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('lost'), 'y']);
      await admin.query('FLUSH BINARY LOGS');
      // MariaDB keeps a binlog until its crash-recovery checkpoint has moved on: retry.
      await waitFor(async () => {
        const [logs] = await admin.query('SHOW BINARY LOGS');
        const names = (logs as { Log_name: string }[]).map((l) => l.Log_name);
        if (names.length === 1) return true;
        await admin.query(`PURGE BINARY LOGS TO '${names.at(-1)!}'`);
        return false;
      }, { intervalMs: 200, message: 'every older binlog purged' });
    } finally {
      await admin.end();
    }
    const r = new McreplProcess(['-c', configFile, 'tailer']);
    const { code } = await r.exited;
    assert.equal(code, 4, r.stderr);
    assert.match(r.stderr, /is no longer on the server/);
    assert.match(r.stderr, /--reset-checkpoint/);

    tailer = new McreplProcess(['-c', configFile, 'tailer', '--reset-checkpoint']);
    await tailer.waitForOutput(/"msg":"mcrepl ready"/);
    const k2 = env.key('after-reset');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k2, 'z']);
    await everywhere(env, [k2], () => 'z');
    tailer.kill('SIGTERM');
    assert.equal((await tailer.exited).code, 0);
  });
});
