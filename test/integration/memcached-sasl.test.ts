/**
 * memcached with SASL authentication (`memcached -S`): the workers authenticate with the
 * configured credentials (password from a file); with a wrong password nothing is written, the
 * server counts as down (its ops are kept, not lost), and the password is never logged.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import memjs from 'memjs';
import { startSaslMemcached, stopSaslMemcached } from '../../scripts/stack.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { McreplProcess, secretsOf, writeConfigFile } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

const SERVERS = [
  { name: 'sasl-east', port: layout.mariadb.port + 30 },
  { name: 'sasl-west', port: layout.mariadb.port + 31 },
];
let env: TestEnv;
let sasl: { address: string; username: string; passwordFile: string }[];
let password: string;

before(async () => {
  sasl = await Promise.all(SERVERS.map((s) => startSaslMemcached(layout, s.name, s.port)));
  password = fs.readFileSync(sasl[0]!.passwordFile, 'utf8').trim();
  env = await createTestEnv({
    overrides: {
      'datacenters.east': { servers: [sasl[0]!.address] },
      'datacenters.west': { servers: [sasl[1]!.address] },
      'memcached.username': sasl[0]!.username,
      'memcached.passwordFile': sasl[0]!.passwordFile,
    },
  });
  await env.sql.query("CALL create_namespace(1, 'sasl')");
});
after(async () => {
  await env?.teardown();
  for (const s of SERVERS) await stopSaslMemcached(layout, s.name, s.port);
});

/** Reads a key with SASL credentials (the text protocol is off under -S). */
async function saslGet(address: string, key: string, pass = password): Promise<string | null> {
  const c = memjs.Client.create(address, { username: sasl[0]!.username, password: pass, retries: 1, timeout: 1, logger: { log: () => undefined } });
  try {
    const r = await c.get(key);
    return r.value ? r.value.toString() : null;
  } finally {
    c.close();
  }
}

test('the servers refuse clients without the right credentials', async () => {
  const k = env.key('probe');
  await assert.rejects(saslGet(sasl[0]!.address, k, 'wrong-password'), /authentication failed/i);
  assert.equal(await saslGet(sasl[0]!.address, k), null);
});

test('the workers authenticate and replicate to SASL servers', async () => {
  await env.startPipeline();
  try {
    const k = env.key('s');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'authenticated']);
    await waitFor(async () => (await Promise.all(sasl.map((s) => saslGet(s.address, k)))).every((v) => v === 'authenticated'), { message: 'on both SASL servers' });
    await env.sql.query('CALL delete_key(1, ?)', [k]);
    await waitFor(async () => (await Promise.all(sasl.map((s) => saslGet(s.address, k)))).every((v) => v === null), { message: 'deleted on both' });
  } finally {
    await env.stopPipeline();
  }
});

test('with a wrong password nothing is written, the server counts as down, and the ops wait for it', async () => {
  const wrong = structuredClone(env.config);
  const badFile = `${writeConfigFile(env.config)}.badpass`;
  fs.writeFileSync(badFile, 'not-the-password\n', { mode: 0o600 });
  wrong.memcached.passwordFile = badFile;
  wrong.memcached.password = 'not-the-password';
  const configFile = writeConfigFile(wrong);
  const k = env.key('waits');
  const worker = new McreplProcess(['-c', configFile, '--log-level', 'debug', 'worker', 'east']);
  try {
    await worker.waitForOutput(/"msg":"mcrepl ready"/);
    await env.startTailer();
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'kept']);
    await worker.waitForOutput(/memcached server (down|not ready)/, 20_000);
    // The job reached the worker and is held there, not applied.
    await worker.waitForOutput(/its jobs wait in the queue/, 20_000);
    assert.equal(await saslGet(sasl[0]!.address, k), null, 'nothing written without the right password');
  } finally {
    worker.kill('SIGTERM');
    await worker.exited;
  }
  for (const secret of [...secretsOf(env.config), password]) {
    assert.ok(!worker.stdout.includes(secret) && !worker.stderr.includes(secret), 'a password was logged');
  }
  // With the right password the op that waited arrives.
  await env.startWorkers();
  await waitFor(async () => (await saslGet(sasl[0]!.address, k)) === 'kept', { timeoutMs: 20_000, message: 'the op that waited for the server' });
  await env.stopPipeline();
});
