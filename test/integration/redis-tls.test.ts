/**
 * Redis over TLS with a password: the pipeline, `mcrepl status` and the queues work through a
 * TLS-only Redis whose certificate comes from a private CA (`redis.tls.caFile`); without that
 * CA the connection is refused with a message that says why.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { mcrepl, writeConfigFile } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

const dir = path.join(layout.dir, 'redis-tls');
const port = layout.redis.port + 1;
let redis: ChildProcess | undefined;
let env: TestEnv;

function openssl(...args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
}

before(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  // A private CA and a server certificate for 127.0.0.1.
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=mcrepl test CA');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.ext');
  const password = fs.readFileSync(path.join(layout.secretsDir, 'redis'), 'utf8').trim();
  const conf = path.join(dir, 'redis.conf');
  fs.writeFileSync(conf, [
    'port 0', `tls-port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'save ""', 'appendonly no',
    `tls-cert-file ${dir}/server.crt`, `tls-key-file ${dir}/server.key`, `tls-ca-cert-file ${dir}/ca.crt`, 'tls-auth-clients no',
    `requirepass ${password}`, '',
  ].join('\n'), { mode: 0o600 });
  redis = spawn('redis-server', [conf], { stdio: 'ignore' });
  await waitFor(() => new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), { message: 'the TLS Redis to listen' });
  env = await createTestEnv({ overrides: { 'redis.port': port, 'redis.tls': { caFile: path.join(dir, 'ca.crt') } } });
  await env.sql.query("CALL create_namespace(1, 'tls')");
});
after(async () => {
  await env?.teardown();
  if (redis && redis.exitCode === null) {
    const exited = new Promise((r) => redis!.once('exit', r));
    redis.kill('SIGTERM');
    await exited;
  }
});

test('the pipeline runs through a TLS Redis with a password', async () => {
  assert.equal(env.redis.options.tls !== undefined, true, 'the test connection itself uses TLS');
  await env.startPipeline();
  try {
    const k = env.key('tls');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'over tls']);
    await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'over tls'), { message: 'replicated' });
  } finally {
    await env.stopPipeline();
  }
  const r = await mcrepl(['-c', writeConfigFile(env.config), 'status']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /checkpoint +gtid/);
});

test('without the private CA the certificate is refused, with a clear message', async () => {
  const config = structuredClone(env.config);
  config.redis.tls = true;
  const started = Date.now();
  const r = await mcrepl(['-c', writeConfigFile(config), 'status']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*(self.signed|unable to (get|verify)|certificate)`, 'i'));
  assert.ok(Date.now() - started < 15_000);
});
