/**
 * Fenced writes: a worker group stopped (SIGSTOP) past its lease while a standby takes over and
 * writes newer values sends nothing more once it runs again (SIGCONT): no byte of it reaches a
 * memcached server after that, and every server ends with the newer values.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mysqlFor } from '../../src/registry/accounts.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { check } from '../../scripts/harness.js';
import { textGet } from '../../scripts/memcached-text.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
});

test('a worker group stopped past its lease writes nothing after its successor took over', async (t) => {
  const N = 50_000;
  // East's two servers, each reached through a proxy that records which connection sent what when.
  const servers = [await PrivateMemcached.create(), await PrivateMemcached.create()];
  const proxies = servers.map((m) => new TcpProxy(m.port));
  for (const [i, m] of servers.entries()) {
    cleanup.push(() => m.stop(), () => proxies[i]!.close());
    await m.start();
    await proxies[i]!.start();
  }
  const env = await createTestEnv({ partitions: 1, overrides: { 'datacenters.east': { servers: proxies.map((p) => `127.0.0.1:${p.port}`) } } });
  cleanup.push(() => env.teardown());
  const keys = new RedisKeys(env.prefix);
  await env.sql.query("CALL create_namespace(60, 'fenced')");
  const configFile = writeConfigFile(env.config);
  await env.startWorker('west');
  await env.startTailer();
  const stale = new McreplProcess(['-c', configFile, 'worker', 'east']);
  cleanup.push(async () => stale.kill('SIGKILL'));
  await stale.waitForOutput(/"msg":"mcrepl ready"/);
  const standby = new McreplProcess(['-c', configFile, 'worker', 'east']);
  cleanup.push(async () => standby.kill('SIGKILL'));
  await standby.waitForOutput(/waiting for the lease held by another process/);

  const prefix = `${env.prefix}:f:`;
  const bulk = (value: string) =>
    env.root.query(`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT 60, CONCAT(?, seq), CONCAT(?, seq, ?) FROM seq_1_to_${N}`, [prefix, value, 'x'.repeat(60)]);
  await bulk('v1-');
  // Stopped in the middle of applying it, holding writes it has not sent yet.
  await waitFor(async () => Number((await env.redis.hget(keys.applied('east'), '0'))?.split(':').at(-1) ?? 0) > 0, { timeoutMs: 60_000, intervalMs: 5, message: 'east applied a first chunk' });
  stale.kill('SIGSTOP');
  const stoppedAt = Date.now();
  await standby.waitForOutput(/"msg":"lease acquired"/, 30_000);
  // The successor finishes the transaction and writes newer values over every key.
  await bulk('v2-');
  const last = `${prefix}${N}`;
  await waitFor(async () => (await Promise.all(servers.map((m) => textGet(m.address, last)))).every((v) => v?.toString().startsWith(`v2-${N}`)), { timeoutMs: 120_000, message: 'the successor applied the newer values' });

  const resumedAt = Date.now();
  stale.kill('SIGCONT');
  await stale.waitForOutput(/lost the lease|not renewed in time/, 30_000);
  const late = proxies.reduce((n, p) => n + p.bytesSince(resumedAt, stoppedAt), 0);
  t.diagnostic(`bytes the stopped worker group sent after it resumed: ${late}`);
  assert.equal(late, 0, 'nothing from the stopped worker group reached a server after it resumed');

  const c = mysqlFor(env.config.mysql, 'admin');
  const result = await check({ host: c.host, port: c.port, user: c.user, password: c.password ?? '', database: c.database }, servers.map((m) => m.address), [], { nsId: 60 });
  assert.equal(result.liveKeys.size, N);
  assert.equal(result.divergent.size, 0, `divergent keys: ${JSON.stringify([...result.divergent.values()].slice(0, 3))}`);
});
