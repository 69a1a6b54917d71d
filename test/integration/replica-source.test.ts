/**
 * A site whose tailer reads a MariaDB replica of the primary (log_slave_updates), as a site far
 * from the primary does: preflight checks what a replica must do, the pipeline applies what the
 * primary committed, and the site's source is switched by GTID under writes (replica → primary
 * → replica) without losing anything or applying anything out of order: by hand (a restart on
 * another source), by the tailer itself while the replica is far behind (fallbackBehind), and
 * when the primary is replaced by its promoted replica.
 *
 * The replica is a private mariadbd (port base+2, data under .stack/mariadb-replica, started
 * empty for each run) replicating from the stack's MariaDB from its current GTID position, so
 * it gets the test's schema and accounts through replication.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { ResolvedConfig } from '../../src/config/schema.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { preflight } from '../../src/source/preflight.js';
import { check } from '../../scripts/harness.js';
import { startReplica, type Replica } from '../../scripts/replica.js';
import { mcrepl, McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { watchForRegressions } from '../helpers/regression-watcher.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
let replica: Replica;
const cleanup: (() => Promise<void>)[] = [];

before(async () => {
  // Port base+8: the preflight test's server is base+7.
  replica = await startReplica(layout, { name: 'mariadb-replica', port: layout.mariadb.port + 2, serverId: 2 });
  env = await createTestEnv({ partitions: 2 });
});

after(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
  await env?.teardown();
  await replica?.stop();
});

let workersStarted = false;
/** The worker groups of both data centers, once for the file's tests (they serve the same Redis). */
async function startWorkers(file: string): Promise<void> {
  if (workersStarted) return;
  workersStarted = true;
  const workers = [new McreplProcess(['-c', file, 'worker', 'east']), new McreplProcess(['-c', file, 'worker', 'west'])];
  cleanup.push(async () => void workers.forEach((w) => w.kill('SIGKILL')));
  for (const w of workers) await w.waitForOutput(/"msg":"mcrepl ready"/);
}

/** The replica has applied everything the primary committed so far. */
async function replicaCaughtUp(): Promise<void> {
  assert.ok(await replica.caughtUp(30_000), 'the replica to apply what the primary committed');
}

/** The pipeline's config as one site whose tailer reads MySQL on `port` (the replica, or the primary). */
const siteOn = (config: ResolvedConfig, port: number, fallbackBehind = 0): ResolvedConfig => ({
  ...config,
  tailer: { ...config.tailer, sourceCheckMs: 200 },
  sites: { main: { redis: config.redis, source: { host: '127.0.0.1', port, fallbackBehind }, datacenters: Object.keys(config.datacenters) } },
});

test('preflight of a replica source: what it must do, each with its fix', async () => {
  await replicaCaughtUp();
  const c = await connectMysql({ ...mysqlFor(env.config.mysql, 'tailer'), port: replica.inst.port });
  try {
    const ok = await preflight(c, { database: env.config.mysql.database, serverId: env.config.mysql.serverId, replica: true });
    assert.deepEqual(ok.problems, [], 'a replica with log_slave_updates, ROW/FULL/FULL and BLACKHOLE is a good source');

    await replica.root.query('SET GLOBAL slave_run_triggers_for_rbr = YES');
    await replica.root.query('STOP SLAVE');
    await replica.root.query('SET GLOBAL replicate_wild_ignore_table = ?', [`${env.config.mysql.database}.mc\\_%`]);
    const bad = await preflight(c, { database: env.config.mysql.database, serverId: env.config.mysql.serverId, replica: true });
    assert.equal(bad.problems.length, 2, bad.problems.join('\n'));
    assert.match(bad.problems.join('\n'), /slave_run_triggers_for_rbr is YES: .*write the key registry a second time/);
    assert.match(bad.problems.join('\n'), /replicate_wild_ignore_table .* matches .*mc_storage/);
  } finally {
    await replica.root.query('SET GLOBAL slave_run_triggers_for_rbr = NO');
    await replica.root.query("SET GLOBAL replicate_wild_ignore_table = ''");
    await replica.root.query('START SLAVE');
    await c.end();
  }
});

test('the primary itself as a site\'s source, under another address: no replica checks when its server_id is the primary\'s', async () => {
  const c = await connectMysql(mysqlFor(env.config.mysql, 'tailer'));
  try {
    const [rows] = await c.query('SELECT @@server_id AS id, @@log_slave_updates AS lsu');
    const { id, lsu } = (rows as { id: number; lsu: number }[])[0]!;
    assert.equal(Number(lsu), 0, 'the stack primary does not log what it replicates');
    const asReplica = await preflight(c, { database: env.config.mysql.database, serverId: env.config.mysql.serverId, replica: true });
    assert.match(asReplica.problems.join('\n'), /log_slave_updates is OFF/);
    const asPrimary = await preflight(c, { database: env.config.mysql.database, serverId: env.config.mysql.serverId, replica: true, primaryServerId: String(id) });
    assert.deepEqual(asPrimary.problems, []);
  } finally {
    await c.end();
  }
});

test("a site's tailer switched by GTID from the replica to the primary and back, under writes: nothing lost, nothing out of order", { timeout: 240_000 }, async () => {
  await env.sql.query("CALL create_namespace(80, 'replica')");
  await replicaCaughtUp();
  const file = writeConfigFile(siteOn(env.config, replica.inst.port));
  await startWorkers(file);

  // A steady stream of sets, each key's value growing, while the source changes twice.
  const keys = Array.from({ length: 200 }, (_, i) => env.key(`r${i}`));
  const watcher = watchForRegressions(env.servers, keys.slice(0, 40), (v) => Number(v), 5);
  let writing = true;
  let written = 0;
  let writer: Promise<void> | undefined;
  const sources: [string, number][] = [
    ['replica', replica.inst.port],
    ['primary', env.config.mysql.port],
    ['replica', replica.inst.port],
  ];
  for (const [name, port] of sources) {
    if (name === 'replica') await replicaCaughtUp(); // a replica behind the checkpoint would not have the next GTID yet
    const tailer = new McreplProcess(['-c', writeConfigFile(siteOn(env.config, port)), 'tailer']);
    await tailer.waitForOutput(/"msg":"mcrepl ready"/, 30_000);
    await tailer.waitForOutput(new RegExp(`"source":"127.0.0.1:${port}".*"msg":"binlog stream ready"`), 30_000);
    writer ??= (async () => {
      for (let i = 1; writing; i++) {
        await env.sql.query('CALL set_key(80, ?, ?, 0)', [keys[i % keys.length]!, String(i)]);
        written = i;
      }
    })();
    const from = written;
    await waitFor(async () => written > from + 300, { timeoutMs: 60_000, message: `writes go on while reading the ${name}` });
    await tailer.kill('SIGTERM');
    const { code } = await tailer.exited;
    assert.equal(code, 0, `the tailer on the ${name} stopped cleanly:\n${tailer.stderr}`);
    if (name === 'replica') assert.doesNotMatch(tailer.stdout, /"level":50/, 'no error reading the replica');
  }
  writing = false;
  await writer;
  // The last source (the replica) runs on until everything is applied.
  await replicaCaughtUp();
  const last = new McreplProcess(['-c', file, 'tailer']);
  cleanup.push(async () => last.kill('SIGKILL'));
  await last.waitForOutput(/"msg":"mcrepl ready"/, 30_000);
  const finalKey = keys[written % keys.length]!;
  await waitFor(async () => (await env.readEverywhere(finalKey)).every((v) => v?.toString() === String(written)), { timeoutMs: 60_000, message: 'the last write applied everywhere' });
  const w = await watcher.stop();
  assert.deepEqual(w.regressions, [], 'no key ever went back to an older value on any server');
  const admin = mysqlFor(env.config.mysql, 'admin');
  const result = await check({ host: admin.host, port: admin.port, user: admin.user, password: admin.password ?? '', database: admin.database }, env.servers, [], { nsId: 80 });
  assert.equal(result.divergent.size, 0, `divergent keys: ${JSON.stringify([...result.divergent.values()].slice(0, 3))}`);
  assert.equal(result.liveKeys.size, keys.length);
  await last.kill('SIGTERM');
  await last.exited;
});

test('pointed at a replica that is behind its checkpoint, the tailer waits for it (not "binlog purged") and goes on once it caught up', { timeout: 120_000 }, async () => {
  await replicaCaughtUp();
  await replica.root.query('STOP SLAVE');
  try {
    // The checkpoint moves past what the stopped replica has: a tailer reads the primary.
    const onPrimary = new McreplProcess(['-c', writeConfigFile(siteOn(env.config, env.config.mysql.port)), 'tailer']);
    cleanup.push(async () => onPrimary.kill('SIGKILL'));
    await onPrimary.waitForOutput(/"msg":"mcrepl ready"/, 30_000);
    const k = env.key('ahead');
    await env.sql.query('CALL set_key(80, ?, ?, 0)', [k, 'v1']);
    await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'v1'), { message: 'applied from the primary' });
    await onPrimary.kill('SIGTERM');
    await onPrimary.exited;

    const onReplica = new McreplProcess(['-c', writeConfigFile(siteOn(env.config, replica.inst.port)), 'tailer']);
    cleanup.push(async () => onReplica.kill('SIGKILL'));
    await onReplica.waitForOutput(/the source has not reached the checkpoint yet/, 30_000);
    assert.equal(onReplica.child.exitCode, null, 'still running: a replica behind is not a purged binlog');
    await replica.root.query('START SLAVE');
    await env.sql.query('CALL set_key(80, ?, ?, 0)', [k, 'v2']);
    await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'v2'), { timeoutMs: 60_000, message: 'the tailer on the replica goes on once it caught up' });
    assert.doesNotMatch(onReplica.stdout, /no longer on the server/);
    await onReplica.kill('SIGTERM');
  } finally {
    await replica.root.query('START SLAVE').catch(() => undefined);
  }
});

test('a replica far behind the primary: the tailer reads the primary meanwhile and goes back to the replica once it caught up, nothing lost or out of order', { timeout: 180_000 }, async () => {
  await env.sql.query("CALL create_namespace(81, 'fallback')");
  await replicaCaughtUp();
  const file = writeConfigFile(siteOn(env.config, replica.inst.port, 50));
  await startWorkers(file);
  const tailer = new McreplProcess(['-c', file, 'tailer']);
  cleanup.push(async () => tailer.kill('SIGKILL'));
  await tailer.waitForOutput(/"msg":"mcrepl ready"/, 30_000);
  await tailer.waitForOutput(new RegExp(`"source":"127.0.0.1:${replica.inst.port}".*"msg":"binlog stream ready"`), 30_000);

  const keys = Array.from({ length: 100 }, (_, i) => env.key(`f${i}`));
  const watcher = watchForRegressions(env.servers, keys.slice(0, 30), (v) => Number(v), 5);
  let writing = true;
  let written = 0;
  const writer = (async () => {
    for (let i = 1; writing; i++) {
      await env.sql.query('CALL set_key(81, ?, ?, 0)', [keys[i % keys.length]!, String(i)]);
      written = i;
    }
  })();
  const applied = async (n: number) => (await env.readEverywhere(keys[n % keys.length]!)).every((v) => Number(v?.toString()) >= n);
  try {
    await waitFor(async () => written > 100 && (await applied(100)), { timeoutMs: 30_000, message: 'writes applied through the replica' });

    // The replica stops applying: the site would stand still; the tailer reads the primary.
    await replica.root.query('STOP SLAVE');
    await tailer.waitForOutput(/"msg":"the replica is far behind the primary: reading the primary until it catches up"/, 30_000);
    await tailer.waitForOutput(new RegExp(`"source":"127.0.0.1:${env.config.mysql.port}".*"msg":"binlog stream ready"`), 30_000);
    const during = written;
    await waitFor(async () => written > during + 200 && (await applied(during + 200)), { timeoutMs: 30_000, message: 'writes applied while the replica stands still' });
    // status says which server the site reads now, and that the source is not the replica's.
    const st = await mcrepl(['-c', file, 'status', '--json']);
    const report = JSON.parse(st.stdout) as { sites: { source: { server: string; reading: string | null } }[] };
    assert.deepEqual([report.sites[0]?.source.server, report.sites[0]?.source.reading], [`127.0.0.1:${replica.inst.port}`, `127.0.0.1:${env.config.mysql.port}`], st.stdout);
    assert.match((await mcrepl(['-c', file, 'status'])).stdout, /reading the primary 127\.0\.0\.1:\d+ while it is far behind/);

    // The replica applies again: once it has what the tailer read, the tailer reads it again.
    const stream = tailer.stdout.length;
    await replica.root.query('START SLAVE');
    await tailer.waitForOutput(/"msg":"the replica has caught up: reading it again"/, 60_000);
    await waitFor(async () => new RegExp(`"source":"127.0.0.1:${replica.inst.port}".*"msg":"binlog stream ready"`).test(tailer.stdout.slice(stream)), { timeoutMs: 30_000, message: 'the stream reopened on the replica' });
    const back = written;
    await waitFor(async () => written > back + 200 && (await applied(back + 200)), { timeoutMs: 30_000, message: 'writes applied through the replica again' });
  } finally {
    writing = false;
    await writer;
  }
  await waitFor(async () => applied(written), { timeoutMs: 60_000, message: 'the last write applied everywhere' });
  const w = await watcher.stop();
  assert.deepEqual(w.regressions, [], 'no key ever went back to an older value on any server');
  assert.doesNotMatch(tailer.stdout, /"level":50/, 'no error while switching');
  const admin = mysqlFor(env.config.mysql, 'admin');
  const result = await check({ host: admin.host, port: admin.port, user: admin.user, password: admin.password ?? '', database: admin.database }, env.servers, [], { nsId: 81 });
  assert.equal(result.divergent.size, 0, `divergent keys: ${JSON.stringify([...result.divergent.values()].slice(0, 3))}`);
  await tailer.kill('SIGTERM');
  const { code } = await tailer.exited;
  assert.equal(code, 0, tailer.stderr);
});

// Last: it promotes the replica, which then replicates no more.
test('the primary replaced by its promoted replica, with writes before and after: the tailer, pointed at the new primary, resumes by GTID, nothing lost or out of order', { timeout: 180_000 }, async () => {
  await env.sql.query("CALL create_namespace(82, 'failover')");
  await replicaCaughtUp();
  const onOld = writeConfigFile(env.config);
  await startWorkers(onOld);
  const tailer = new McreplProcess(['-c', onOld, 'tailer']);
  cleanup.push(async () => tailer.kill('SIGKILL'));
  await tailer.waitForOutput(/"msg":"mcrepl ready"/, 30_000);

  const keys = Array.from({ length: 100 }, (_, i) => env.key(`p${i}`));
  const watcher = watchForRegressions(env.servers, keys.slice(0, 30), (v) => Number(v), 5);
  const applied = async (n: number) => (await env.readEverywhere(keys[n % keys.length]!)).every((v) => Number(v?.toString()) >= n);
  const write = async (conn: { query: (sql: string, values: unknown[]) => Promise<unknown> }, from: number, count: number) => {
    for (let i = from; i < from + count; i++) await conn.query('CALL set_key(82, ?, ?, 0)', [keys[i % keys.length]!, String(i)]);
  };
  await write(env.sql, 1, 400);
  await waitFor(async () => applied(400), { timeoutMs: 30_000, message: 'writes on the old primary applied' });

  // Failover: the writes stop, the replica has everything, it becomes the primary.
  assert.ok(await replica.caughtUp(30_000), 'the replica has every write of the old primary');
  await replica.query('STOP SLAVE');
  await replica.query('RESET SLAVE ALL');
  await replica.query('SET GLOBAL read_only = OFF');
  // The tailer follows (mysql now names the new primary) while the applications write there.
  await tailer.kill('SIGTERM');
  assert.equal((await tailer.exited).code, 0, tailer.stderr);
  const promoted: ResolvedConfig = { ...env.config, mysql: { ...env.config.mysql, port: replica.inst.port } };
  const onNew = new McreplProcess(['-c', writeConfigFile(promoted), 'tailer']);
  cleanup.push(async () => onNew.kill('SIGKILL'));
  await onNew.waitForOutput(new RegExp(`"source":"127.0.0.1:${replica.inst.port}".*"msg":"binlog stream ready"`), 30_000);
  assert.match(onNew.stdout, /"msg":"resuming from checkpoint"/, 'it resumes from the checkpoint saved on the old primary');
  const writer = mysqlFor(promoted.mysql, 'writer');
  const conn = await connectMysql(writer);
  try {
    await write(conn, 401, 400);
  } finally {
    await conn.end();
  }
  await waitFor(async () => applied(800), { timeoutMs: 60_000, message: 'writes on the new primary applied' });
  const w = await watcher.stop();
  assert.deepEqual(w.regressions, [], 'no key ever went back to an older value on any server');
  assert.doesNotMatch(onNew.stdout, /"level":50/, 'no error on the new primary');
  const admin = mysqlFor(promoted.mysql, 'admin');
  const result = await check({ host: admin.host, port: admin.port, user: admin.user, password: admin.password ?? '', database: admin.database }, env.servers, [], { nsId: 82 });
  assert.equal(result.divergent.size, 0, `divergent keys: ${JSON.stringify([...result.divergent.values()].slice(0, 3))}`);
  assert.equal(result.liveKeys.size, keys.length);
  await onNew.kill('SIGTERM');
  assert.equal((await onNew.exited).code, 0, onNew.stderr);
});
