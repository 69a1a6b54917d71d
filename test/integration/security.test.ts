/**
 * Least privilege and secrets: each MySQL account can do its job and nothing more, and no
 * password ever shows up in what mcrepl prints, whatever happens during the run.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { mysqlFor } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { McreplProcess, mcrepl, secretsOf, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
let tailer: Connection;
let admin: Connection;
before(async () => {
  env = await createTestEnv();
  await env.sql.query("CALL create_namespace(1, 'sec')");
  tailer = await connectMysql(mysqlFor(env.config.mysql, 'tailer'));
  admin = await connectMysql(mysqlFor(env.config.mysql, 'admin'));
});
after(async () => {
  await tailer?.end().catch(() => undefined);
  await admin?.end().catch(() => undefined);
  await env?.teardown();
});

/** The statement is refused for lack of rights (not for any other reason). */
async function denied(conn: Connection, sql: string, params: unknown[] = []): Promise<void> {
  await assert.rejects(conn.query(sql, params), (err: Error & { code?: string }) => {
    assert.match(String(err.code), /^ER_(TABLEACCESS|COLUMNACCESS|PROCACCESS|DBACCESS|SPECIFIC_ACCESS|ACCESS)_DENIED/, `${sql}: ${err.message}`);
    return true;
  }, sql);
}

describe('MySQL accounts', () => {
  test('the stack runs each role as its own account', () => {
    const users = new Set([env.config.mysql.user, env.config.mysql.tailer?.user, env.config.mysql.admin?.user, env.config.mysql.writer?.user]);
    assert.equal(users.size, 4, [...users].join(', '));
  });

  test('the writer calls the procedures and inserts into mc_storage, and nothing else', async () => {
    const k = env.key('w');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v']);
    await env.sql.query('CALL delete_key(1, ?)', [k]);
    await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, ?, ?)', [k, 'v']);
    // The key registry: neither read nor changed directly.
    await denied(env.sql, 'SELECT * FROM mc_stored_keys');
    await denied(env.sql, 'SELECT COUNT(*) FROM mc_stored_keys WHERE mc_key = ?', [k]);
    await denied(env.sql, 'UPDATE mc_stored_keys SET ns_id = 2 WHERE mc_key = ?', [k]);
    await denied(env.sql, 'DELETE FROM mc_stored_keys WHERE mc_key = ?', [k]);
    await denied(env.sql, 'INSERT INTO mc_stored_keys (ns_id, mc_key) VALUES (1, ?)', [env.key('forged')]);
    await denied(env.sql, 'TRUNCATE TABLE mc_stored_keys');
    // Nor the namespaces, nor the op log beyond INSERT, nor the schema.
    await denied(env.sql, 'SELECT * FROM mc_namespaces');
    await denied(env.sql, "UPDATE mc_namespaces SET ns_name = 'x'");
    await denied(env.sql, 'SELECT * FROM mc_storage');
    await denied(env.sql, 'DELETE FROM mc_storage');
    await denied(env.sql, 'ALTER TABLE mc_storage ADD COLUMN x INT');
    await denied(env.sql, 'DROP TABLE mc_stored_keys');
    // The registry still holds exactly what the procedures and the trigger put there.
    const [rows] = await env.root.query<RowDataPacket[]>('SELECT ns_id FROM mc_stored_keys WHERE mc_key = ?', [k]);
    assert.deepEqual(rows.map((r) => Number(r.ns_id)), [1]);
  });

  test('the tailer reads, and writes nothing but the registry sweep (mc_sweep_expired, decision 0018)', async () => {
    const [rows] = await tailer.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys');
    assert.ok(Number(rows[0]!.n) >= 1);
    await denied(tailer, 'INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, ?, ?)', [env.key('t'), 'v']);
    await denied(tailer, 'CALL set_key(1, ?, ?, 0)', [env.key('t'), 'v']);
    await denied(tailer, 'CALL delete_key(1, ?)', [env.key('t')]);
    await denied(tailer, 'CALL flush_namespace(1)');
    await denied(tailer, 'DELETE FROM mc_stored_keys');
    await denied(tailer, 'UPDATE mc_namespaces SET ns_name = ?', ['x']);
    const [swept] = await tailer.query<RowDataPacket[][]>('CALL mc_sweep_expired(10, 600)');
    assert.equal(Number(swept[0]![0]!.removed), 0, 'no key of this test has expired');
  });

  test('the operators account reads the registry and flushes through the procedure, but changes no table directly', async () => {
    const [rows] = await admin.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys');
    assert.ok(Number(rows[0]!.n) >= 1);
    await denied(admin, 'DELETE FROM mc_stored_keys');
    await denied(admin, 'UPDATE mc_stored_keys SET ns_id = 2');
    await denied(admin, 'INSERT INTO mc_namespaces (ns_id, ns_name) VALUES (9, ?)', ['forged']);
  });
});

describe('secrets', () => {
  test('no password in use appears in any line mcrepl prints during a run, even at debug level and on errors', async () => {
    const secrets = secretsOf(env.config);
    assert.ok(secrets.length >= 5, `mysql, three role accounts and redis have passwords (${secrets.length})`);
    const configFile = writeConfigFile(env.config);
    const printed: string[] = [];

    const daemon = new McreplProcess(['-c', configFile, '--log-level', 'trace', 'run']);
    try {
      await daemon.waitForOutput(/"msg":"mcrepl ready"/);
      const keys = Array.from({ length: 20 }, () => env.key('s'));
      for (const k of keys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v']);
      await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, 'bad key', 'x')");
      await waitFor(async () => (await env.readEverywhere(keys.at(-1)!)).every((v) => v?.toString() === 'v'), { message: 'replicated' });
      for (const args of [['status'], ['status', '--json'], ['flush', 'sec'], ['config'], ['--log-level', 'trace', 'schema', 'install']]) {
        const r = await mcrepl(['-c', configFile, ...args]);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        printed.push(r.stdout, r.stderr);
      }
    } finally {
      daemon.kill('SIGTERM');
      await daemon.exited;
    }
    printed.push(daemon.stdout, daemon.stderr);

    // Failures print too: a wrong password for MySQL and for Redis, an unreachable Redis.
    for (const bad of [{ MCREPL_MYSQL__TAILER__PASSWORD_FILE: '/dev/null' }, { MCREPL_REDIS__PASSWORD_FILE: '/dev/null' }, { MCREPL_REDIS__PORT: '1' }]) {
      const r = await mcrepl(['-c', configFile, '--log-level', 'trace', 'MCREPL_MYSQL__TAILER__PASSWORD_FILE' in bad ? 'tailer' : 'status'], bad);
      assert.notEqual(r.code, 0, JSON.stringify(bad));
      printed.push(r.stdout, r.stderr);
    }

    const all = printed.join('\n');
    const lines = all.split('\n').filter((l) => l.trim().length > 0);
    assert.ok(lines.length > 50, `a real run was captured (${lines.length} lines)`);
    assert.match(all, /"level":"debug"/, 'debug lines were captured');
    for (const line of lines) {
      for (const secret of secrets) assert.ok(!line.includes(secret), `a password appears in: ${line.slice(0, 300)}`);
    }
  });
});
