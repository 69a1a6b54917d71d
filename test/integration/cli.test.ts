/** The `mcrepl` command line as an operator uses it: flush, status, config errors, help. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { mcrepl, secretsOf, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
let configFile: string;
before(async () => {
  env = await createTestEnv();
  configFile = writeConfigFile(env.config);
  await env.sql.query("CALL create_namespace(1, 'users')");
  await env.sql.query("CALL create_namespace(2, 'sessions')");
});
after(async () => env?.teardown());
// A failed assertion must not leave a tailer holding the lease for the next test.
afterEach(async () => env?.stopPipeline());

describe('flush', () => {
  test('waits until every data center has applied the flush, and says so', async () => {
    await env.startPipeline();
    const users = [env.key('u'), env.key('u'), env.key('u')];
    const session = env.key('s');
    for (const k of users) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'u']);
    await env.sql.query('CALL set_key(2, ?, ?, 0)', [session, 's']);
    await waitFor(async () => (await env.readEverywhere(session)).every((v) => v?.toString() === 's'), { message: 'written' });
    for (const k of users) assert.ok((await env.readEverywhere(k)).every((v) => v?.toString() === 'u'));

    const r = await mcrepl(['-c', configFile, 'flush', 'users']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /flush #\d+ of namespace 'users' \(ns_id 1\): 3 keys to delete/);
    assert.match(r.stdout, /namespace 'users' flushed in every data center \(east, west\): 3 keys deleted/);
    // It returned only after the fact: no waiting needed here.
    for (const k of users) assert.deepEqual(await env.readEverywhere(k), [null, null, null, null]);
    for (const v of await env.readEverywhere(session)) assert.equal(v?.toString(), 's');

    const byId = await mcrepl(['-c', configFile, 'flush', '2']);
    assert.equal(byId.code, 0, byId.stderr);
    assert.match(byId.stdout, /namespace 'sessions' \(ns_id 2\): 1 key to delete/);
    assert.deepEqual(await env.readEverywhere(session), [null, null, null, null]);
    await env.stopPipeline();
  });

  test('an unknown namespace is an error that lists the known ones', async () => {
    const r = await mcrepl(['-c', configFile, 'flush', 'nope']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no namespace 'nope' \(known: sessions, users\)/);
  });

  test('without workers it times out, exits 1, and names the data centers behind', async () => {
    await env.startTailer();
    const r = await mcrepl(['-c', configFile, 'flush', 'users', '--timeout', '1']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /east: only 0 of 4 partitions have applied the flush after 1 s/);
    assert.match(r.stdout, /west: only 0 of 4 partitions/);
    await env.stopPipeline();
  });
});

describe('status', () => {
  test('shows the checkpoint, queue depth per data center and dead letters', async () => {
    await env.startTailer();
    await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, 'has space', 'x')");
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('queued'), 'q']);
    await waitFor(async () => (await env.backlog()) > 0, { message: 'jobs queued' });
    // What a worker group recorded about a server that lost its keys.
    const lossy = env.config.datacenters.east!.servers[0]!;
    await env.redis.hset(new RedisKeys(env.prefix).servers('east'), lossy, JSON.stringify({ health: 'healthy', mustFlush: false, complete: false, since: new Date().toISOString() }));
    const r = await mcrepl(['-c', configFile, 'status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /checkpoint +gtid \d+-\d+-\d+, op #\d+, saved/);
    assert.match(r.stdout, /tailer +active: /);
    assert.match(r.stdout, /east +[1-9]\d* +\d+ +\d+ +[\d.]+ (B|KB|MB) +not running/);
    // No worker group runs: what an earlier one recorded is not shown as the present state.
    assert.match(r.stdout, /\n  127\.0\.0\.1:\d+ +unknown/);
    assert.doesNotMatch(r.stdout, /\n  127\.0\.0\.1:\d+ +healthy/);
    assert.match(r.stdout, new RegExp(`\\n  ${lossy.replace(/\./g, '\\.')} +unknown, last recorded healthy, since [^,]+, missing keys \\(`));
    assert.match(r.stdout, /dead letters +1 \(latest first\):/);
    assert.match(r.stdout, /key has a space at byte 4/);
    const j = await mcrepl(['-c', configFile, 'status', '--json']);
    const report = JSON.parse(j.stdout) as { partitions: number; datacenters: { name: string; queued: { waiting: number }; redisBytes: number }[]; deadLetters: { total: number } };
    assert.equal(report.partitions, 4);
    assert.equal(report.deadLetters.total, 1);
    const east = report.datacenters.find((d) => d.name === 'east')!;
    assert.ok(east.queued.waiting > 0);
    assert.ok(east.redisBytes > 100, `the backlog's Redis memory is shown (${east.redisBytes} bytes)`);
    await env.stopPipeline();
  });
});

describe('configuration and usage', () => {
  test('several mistakes are reported at once, each naming the option, and exit 2', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcrepl-cfg-'));
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, ['mysql:', '  port: 99999', '  pasword: x', 'partitions: 0', 'datacenters:', '  East!: { servers: [nope] }', ''].join('\n'));
    const r = await mcrepl(['-c', file, 'config'], { MCREPL_REDIS__PORT: 'abc' });
    assert.equal(r.code, 2);
    for (const re of [/mysql\.port: .*65535/, /mysql: unknown option\(s\) 'pasword'/, /partitions: .*>=1/, /datacenters\.East!: invalid name: data-center names are/, /redis\.port: .*\(from MCREPL_REDIS__PORT\)/]) {
      assert.match(r.stderr, re);
    }
    assert.ok(r.stderr.split('\n').filter((l) => l.startsWith('  - ')).length >= 5, r.stderr);
  });

  test('status with Redis unreachable fails fast with a clear message', async () => {
    const started = Date.now();
    const r = await mcrepl(['-c', configFile, 'status'], { MCREPL_REDIS__PORT: '1' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach Redis at 127\.0\.0\.1:1: connect ECONNREFUSED/);
    assert.doesNotMatch(r.stderr, /Unhandled error event/);
    assert.ok(Date.now() - started < 10_000);
  });

  test('bad option values and unknown commands are usage errors', async () => {
    const r = await mcrepl(['-c', configFile, 'flush', 'users', '--timeout', 'abc']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /argument 'abc' is invalid. expected a number of seconds greater than 0/);
    assert.equal((await mcrepl(['-c', configFile, 'no-such-command'])).code, 2);
  });

  test('--reset-checkpoint is refused while another tailer is active', async () => {
    const active = await env.startTailer();
    const r = await mcrepl(['-c', configFile, 'tailer', '--reset-checkpoint']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another tailer is active \(.+\); stop it before starting one with --reset-checkpoint/);
    await active.close();
  });

  test('an unknown data center is a usage error', async () => {
    const r = await mcrepl(['-c', configFile, 'worker', 'mars']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no data center named 'mars' in the config \(known: east, west\)/);
  });

  test('config prints the resolved config without secrets', async () => {
    const r = await mcrepl(['-c', configFile, 'config']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /partitions: 4/);
    const secrets = secretsOf(env.config);
    assert.ok(secrets.length >= 5, `the stack config has mysql, three role and redis passwords (${secrets.length})`);
    for (const secret of secrets) assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), 'a password was printed');
    assert.match(r.stdout, /password: "?\[redacted\]/);
  });

  test('every command has --help', async () => {
    for (const args of [[], ['run'], ['tailer'], ['worker'], ['flush'], ['status'], ['schema'], ['schema', 'install'], ['config']]) {
      const r = await mcrepl([...args, '--help']);
      assert.equal(r.code, 0, `mcrepl ${args.join(' ')} --help`);
      assert.match(r.stdout, /Usage: mcrepl/);
    }
  });
});
