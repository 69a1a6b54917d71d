/**
 * `npm run demo`: the whole pipeline on the local stack, shown working.
 *
 *   1. brings the local stack up (MariaDB, Redis, 2 data centers × 2 memcached),
 *   2. installs the schema (`mcrepl schema install`) and starts `mcrepl run`,
 *   3. writes entries through `CALL set_key` (the original interface, verbatim),
 *   4. reads them back from every memcached server of both data centers with a plain client,
 *   5. runs `mcrepl flush my_namespace` and shows its keys gone everywhere while the other
 *      namespace is untouched,
 *   6. stops everything it started and exits 0 — or exits 1 at the first thing not as expected.
 *
 * It uses its own database (mcrepl_demo) and Redis prefix (mcrepl-demo), reset on every run.
 * `--keep-stack` leaves the local stack running afterwards.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { MemcachedTextClient } from './memcached-text.js';
import { down, repoRoot, stackLayout, up } from './stack.js';

const layout = stackLayout();
const CONFIG = path.join(repoRoot, 'config', 'local.yaml');
const DEMO_ENV = { MCREPL_MYSQL__DATABASE: 'mcrepl_demo', MCREPL_REDIS__PREFIX: 'mcrepl-demo' };
const BIN = path.join(repoRoot, 'bin', 'mcrepl.js');
const keepStack = process.argv.includes('--keep-stack');

const say = (s = '') => process.stdout.write(`${s}\n`);
const step = (n: number, s: string) => say(`\n\x1b[1m${n}. ${s}\x1b[0m`);

class DemoFailure extends Error {}
function expect(cond: boolean, what: string): void {
  if (!cond) throw new DemoFailure(what);
}

function mcrepl(args: string[]): Promise<number> {
  say(`   $ mcrepl ${args.join(' ')}`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, '-c', CONFIG, ...args], { cwd: repoRoot, env: { ...process.env, ...DEMO_ENV }, stdio: ['ignore', 'pipe', 'pipe'] });
    const indent = (d: Buffer) => d.toString().replace(/^(?=.)/gm, '   │ ');
    child.stdout.on('data', (d: Buffer) => process.stdout.write(indent(d)));
    child.stderr.on('data', (d: Buffer) => process.stdout.write(indent(d)));
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

const servers = layout.memcached.map((m) => ({ name: m.name, address: `127.0.0.1:${m.port}` }));

async function readTable(keys: string[]): Promise<Map<string, (string | null)[]>> {
  const table = new Map<string, (string | null)[]>();
  const clients = servers.map((s) => new MemcachedTextClient(s.address));
  try {
    for (const k of keys) table.set(k, await Promise.all(clients.map(async (c) => (await c.get(k))?.value.toString() ?? null)));
  } finally {
    for (const c of clients) c.close();
  }
  return table;
}

function printTable(table: Map<string, (string | null)[]>): void {
  const kw = Math.max(...[...table.keys()].map((k) => k.length), 3);
  say(`   ${'key'.padEnd(kw)}  ${servers.map((s) => s.name.padEnd(11)).join(' ')}`);
  for (const [k, vals] of table) say(`   ${k.padEnd(kw)}  ${vals.map((v) => (v === null ? '—' : v).padEnd(11)).join(' ')}`);
}

async function main(): Promise<void> {
  step(1, 'Local stack: MariaDB (ROW binlog, BLACKHOLE), Redis (AOF), data centers east and west with two memcached each');
  const { started } = await up(layout);
  say(started.length ? `   started ${started.join(', ')}` : '   already running');
  const secret = (name: string) => fs.readFileSync(path.join(layout.secretsDir, name), 'utf8').trim();
  const admin = await mysql.createConnection({ host: '127.0.0.1', port: layout.mariadb.port, user: 'mcrepl_admin', password: secret('mysql-admin'), charset: 'utf8mb4' });
  const redis = new Redis({ host: '127.0.0.1', port: layout.redis.port, password: secret('redis'), lazyConnect: true });
  let app: mysql.Connection | undefined;
  let pipeline: ReturnType<typeof spawn> | undefined;
  try {
    // A clean slate for the demo's own database and Redis prefix.
    await admin.query('DROP DATABASE IF EXISTS mcrepl_demo');
    await redis.connect();
    const stale = await redis.keys('mcrepl-demo:*');
    if (stale.length) await redis.del(...stale);

    step(2, 'Install the schema and start the pipeline (tailer + one worker group per data center)');
    expect((await mcrepl(['schema', 'install'])) === 0, 'schema install failed');
    const logFile = path.join(layout.dir, 'demo-pipeline.log');
    say(`   $ mcrepl run    (logs: ${path.relative(repoRoot, logFile)})`);
    const log = fs.openSync(logFile, 'w');
    pipeline = spawn(process.execPath, [BIN, '-c', CONFIG, 'run'], { cwd: repoRoot, env: { ...process.env, ...DEMO_ENV }, stdio: ['ignore', log, log] });
    const deadline = Date.now() + 30_000;
    while (!fs.readFileSync(logFile, 'utf8').includes('"msg":"mcrepl ready"')) {
      expect(pipeline.exitCode === null, `the pipeline exited early:\n${fs.readFileSync(logFile, 'utf8')}`);
      expect(Date.now() < deadline, 'the pipeline did not become ready within 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    say('   pipeline ready');

    step(3, 'Write cache entries through MySQL (the original interface, verbatim)');
    await admin.query('USE mcrepl_demo');
    // The application's account may only call the procedures and insert into mc_storage.
    app = await mysql.createConnection({ host: '127.0.0.1', port: layout.mariadb.port, user: 'mcrepl_writer', password: secret('mysql-role-writer'), database: 'mcrepl_demo', charset: 'utf8mb4' });
    const keys = ['12345678901234567890123456789012', '12345678901234567890123456789ABC', 'session:alice', 'session:bob'];
    const expected = ['l4l4nd', 'w4st3l4nd', 'logged-in', 'logged-in'];
    // These keys are fixed by the original walkthrough: clear what an earlier run left, so the
    // read-back below shows this run's writes.
    for (const s of servers) {
      const c = new MemcachedTextClient(s.address);
      for (const k of keys) await c.delete(k);
      c.close();
    }
    expect([...(await readTable(keys)).values()].every((vals) => vals.every((v) => v === null)), 'could not clear the demo keys');
    const statements = [
      "insert into mc_namespaces( ns_id, ns_name ) values ( 1, 'my_namespace' );",
      "call set_key( 1, '12345678901234567890123456789012', 'l4l4nd', 100 );",
      "call set_key( 1, '12345678901234567890123456789ABC', 'w4st3l4nd', 100 );",
      "call create_namespace( NULL, 'sessions' );",
      "call set_key( 2, 'session:alice', 'logged-in', 0 );",
      "call set_key( 2, 'session:bob', 'logged-in', 0 );",
    ];
    for (const s of statements) {
      // Creating a namespace is the DBA's job (mcrepl_admin); the rest is the application's (mcrepl_writer).
      const asAdmin = s.startsWith('insert into mc_namespaces');
      say(`   ${asAdmin ? 'mcrepl_admin ' : 'mcrepl_writer'}> ${s}`);
      await (asAdmin ? admin : app).query(s);
    }
    const committed = Date.now();
    let table = await readTable(keys);
    while (![...table.values()].every((vals, i) => vals.every((v) => v === expected[i]))) {
      expect(Date.now() - committed < 5_000, 'entries did not reach every server within 5 s');
      await new Promise((r) => setTimeout(r, 10));
      table = await readTable(keys);
    }

    step(4, `Read back from every memcached server with a plain text-protocol client (arrived in ${Date.now() - committed} ms)`);
    printTable(table);

    step(5, "Flush the namespace 'my_namespace' in every data center");
    expect((await mcrepl(['flush', 'my_namespace'])) === 0, 'mcrepl flush failed');
    table = await readTable(keys);
    printTable(table);
    expect([...table.values()].slice(0, 2).every((vals) => vals.every((v) => v === null)), "my_namespace's keys are still on some server");
    expect([...table.values()].slice(2).every((vals) => vals.every((v) => v === 'logged-in')), 'the sessions namespace lost keys');
    say("   my_namespace: gone from all four servers; sessions: untouched");

    step(6, 'Status');
    expect((await mcrepl(['status'])) === 0, 'mcrepl status failed');

    step(7, 'Stop the pipeline (SIGTERM drains and exits 0)');
    pipeline.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => (pipeline!.exitCode !== null ? r(pipeline!.exitCode) : pipeline!.once('exit', (c) => r(c))));
    expect(code === 0, `the pipeline exited with ${code}`);
    pipeline = undefined;
    say('   stopped cleanly');
  } finally {
    pipeline?.kill('SIGKILL');
    await admin.end().catch(() => undefined);
    await app?.end().catch(() => undefined);
    redis.disconnect();
    if (started.length > 0 && !keepStack) {
      await down(layout);
      say('\n   (stopped the local stack this demo started; `npm run demo -- --keep-stack` leaves it up)');
    }
  }
  say('\n\x1b[32mdemo passed\x1b[0m: written in MySQL, replicated to both data centers, flushed everywhere.');
}

main().then(
  () => process.exit(0),
  (err) => {
    say(`\n\x1b[31mdemo failed\x1b[0m: ${err instanceof DemoFailure ? err.message : (err as Error).stack}`);
    process.exit(1);
  },
);
