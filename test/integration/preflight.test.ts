/**
 * Pointed at a MariaDB whose binlog is not set up for mcrepl (MIXED format, minimal row image
 * and metadata, no schema), the tailer exits non-zero and prints every problem with its fix.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ensureAdminUser, startMariadb, stopMariadb, type MariadbInstance } from '../../scripts/stack.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { mcrepl, writeConfigFile } from '../helpers/cli.js';
import { installAccounts } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { installSchema } from '../../src/registry/schema-installer.js';
import { preflight } from '../../src/source/preflight.js';

const dir = path.join(layout.dir, 'mariadb-mixed');
const mixed: MariadbInstance = {
  port: layout.mariadb.port + 1,
  datadir: path.join(dir, 'data'),
  socket: path.join(dir, 'mysqld.sock'),
  pidFile: path.join(dir, 'mysqld.pid'),
  logFile: path.join(dir, 'mysqld.log'),
};

let env: TestEnv;
before(async () => {
  await startMariadb(mixed, ['--log-bin=mariadb-bin', '--binlog-format=MIXED', '--binlog-row-image=MINIMAL', '--binlog-row-metadata=MINIMAL']);
  await ensureAdminUser(mixed.socket, layout.secretsDir);
  env = await createTestEnv();
});
after(async () => {
  await env?.teardown();
  await stopMariadb(mixed);
});

test('the tailer refuses a MIXED-format server, listing every problem with its fix, and exits 3', async () => {
  const config = structuredClone(env.config);
  config.mysql.port = mixed.port;
  config.mysql.database = 'mcrepl_not_installed';
  // The tailer runs as its own account: create it (and no other: their grants name tables
  // this server does not have) on this server. Its last grant, EXECUTE on the registry sweep,
  // names a procedure this server does not have either: the account exists by then.
  const conn = await connectMysql(config.mysql, { database: false });
  await installAccounts(conn, { ...config.mysql, admin: undefined, writer: undefined })
    .catch((err: { code?: string }) => {
      if (err.code !== 'ER_SP_DOES_NOT_EXIST') throw err;
    })
    .finally(() => conn.end());
  const r = await mcrepl(['-c', writeConfigFile(config), 'tailer']);
  assert.equal(r.code, 3, `exit code; stderr:\n${r.stderr}`);
  const expected = [
    /binlog_format is MIXED; set binlog_format=ROW/,
    /binlog_row_image is MINIMAL; set binlog_row_image=FULL/,
    /binlog_row_metadata is MINIMAL; set binlog_row_metadata=FULL/,
    /database `mcrepl_not_installed` does not exist; create it with `mcrepl schema install`/,
  ];
  for (const re of expected) assert.match(r.stderr, re);
  assert.match(r.stderr, /the MySQL server is not ready for mcrepl/);
  // One line per problem, all in one report.
  assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('  - ')).length, expected.length, r.stderr);
});

test('the same server passes once it is fixed (preflight is not a blanket refusal)', async () => {
  const config = structuredClone(env.config);
  config.mysql.port = mixed.port;
  const conn = await connectMysql(config.mysql, { database: false });
  try {
    await installSchema(conn, config.mysql.database);
    await conn.query("SET GLOBAL binlog_format = 'ROW'");
    await conn.query("SET GLOBAL binlog_row_image = 'FULL'");
    await conn.query("SET GLOBAL binlog_row_metadata = 'FULL'");
    const result = await preflight(conn, { database: config.mysql.database, serverId: config.mysql.serverId });
    assert.deepEqual(result.problems, []);
  } finally {
    await conn.end();
  }
});
