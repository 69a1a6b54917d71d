/**
 * Two sites, each with its own Redis (here: the stack's Redis under two prefixes, west's behind
 * a latency proxy that can cut it off), its own tailer and its data center's workers, in one
 * `mcrepl run`. West cut off: east goes on applying; `mcrepl flush` names the site it cannot
 * reach and exits 1; `status` shows both sites. Healed: west catches up from its own checkpoint
 * and the flush completes everywhere.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { ResolvedConfig } from '../../src/config/schema.js';
import { sitesOf } from '../../src/config/sites.js';
import { LatencyProxy } from '../../scripts/latency-proxy.js';
import { McreplProcess, mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => undefined);
});

test('two sites: one cut off never holds up the other; flush and status cover both; the cut-off site catches up', { timeout: 180_000 }, async () => {
  const env = await createTestEnv({ partitions: 1, overrides: {} });
  cleanup.push(() => env.teardown());
  const proxy = new LatencyProxy({ targetPort: env.config.redis.port, targetHost: env.config.redis.host, delayMs: 1 });
  await proxy.start();
  cleanup.push(() => proxy.stop());
  const config: ResolvedConfig = {
    ...env.config,
    sites: {
      east: { redis: { ...env.config.redis, prefix: `${env.prefix}-east` }, datacenters: ['east'] },
      west: { redis: { ...env.config.redis, host: '127.0.0.1', port: proxy.port, prefix: `${env.prefix}-west` }, datacenters: ['west'] },
    },
  };
  const [east, west] = sitesOf(config);
  assert.deepEqual([east!.name, Object.keys(east!.config.datacenters), west!.name, Object.keys(west!.config.datacenters)], ['east', ['east'], 'west', ['west']]);
  assert.notEqual(east!.source.serverId, west!.source.serverId, 'two binlog readers of one server need two server ids');
  const file = writeConfigFile(config);
  await env.sql.query("CALL create_namespace(70, 'sites')");

  const run = new McreplProcess(['-c', file, 'run']);
  cleanup.push(async () => run.kill('SIGKILL'));
  await run.waitForOutput(/"msg":"mcrepl ready"/, 30_000);
  const eastServers = config.datacenters.east!.servers;
  const westServers = config.datacenters.west!.servers;
  const readAt = async (servers: string[], key: string) => (await env.readEverywhere(key)).filter((_, i) => servers.includes(env.servers[i]!));

  const k1 = env.key('both');
  await env.sql.query('CALL set_key(70, ?, ?, 0)', [k1, 'v1']);
  await waitFor(async () => (await env.readEverywhere(k1)).every((v) => v?.toString() === 'v1'), { message: 'both sites apply' });

  // West cut off from its Redis: its tailer and workers can neither enqueue nor take jobs.
  proxy.cut();
  const k2 = env.key('while-cut');
  await env.sql.query('CALL set_key(70, ?, ?, 0)', [k2, 'v2']);
  await waitFor(async () => (await readAt(eastServers, k2)).every((v) => v?.toString() === 'v2'), { message: 'east applies while west is cut off' });
  assert.deepEqual(await readAt(westServers, k2), westServers.map(() => null), 'nothing reaches west while it is cut off');

  const flushCut = await mcrepl(['-c', file, 'flush', 'sites', '--timeout', '3']);
  assert.equal(flushCut.code, 1, flushCut.stdout + flushCut.stderr);
  assert.match(flushCut.stdout, /site west: cannot reach its Redis/);
  assert.deepEqual(await readAt(eastServers, k1), eastServers.map(() => null), 'east applied the flush meanwhile');

  const st = await mcrepl(['-c', file, 'status', '--json']);
  assert.equal(st.code, 1, 'a site that cannot be read makes status exit 1');
  const report = JSON.parse(st.stdout) as { sites: { site: string; error?: string; source?: { server: string; transactionsBehind: number | null }; datacenters?: { name: string }[] }[] };
  assert.deepEqual(report.sites.map((s) => s.site), ['east', 'west']);
  assert.deepEqual(report.sites[0]!.datacenters?.map((d) => d.name), ['east']);
  assert.equal(report.sites[0]!.source?.server, `${config.mysql.host}:${config.mysql.port}`);
  assert.match(report.sites[1]!.error ?? '', /no answer from Redis|cannot reach Redis/);

  // Healed: west resumes from its own checkpoint and gets what it missed, the flush included.
  proxy.heal();
  await waitFor(async () => (await readAt(westServers, k2)).every((v) => v === null) && (await readAt(westServers, k1)).every((v) => v === null), {
    timeoutMs: 60_000,
    message: 'west applies the set and the flush it missed',
  });
  const flushed = await mcrepl(['-c', file, 'flush', 'sites', '--timeout', '60']);
  assert.equal(flushed.code, 0, flushed.stdout + flushed.stderr);
  assert.match(flushed.stdout, /flushed in every data center \(east\/east, west\/west\)/);
  const k3 = env.key('after');
  await env.sql.query('CALL set_key(70, ?, ?, 0)', [k3, 'v3']);
  await waitFor(async () => (await env.readEverywhere(k3)).every((v) => v?.toString() === 'v3'), { message: 'both sites apply again' });
  await waitFor(
    async () => {
      const s = await mcrepl(['-c', file, 'status', '--json']);
      const r = JSON.parse(s.stdout) as { sites: { source?: { transactionsBehind: number | null } }[] };
      return s.code === 0 && r.sites.every((x) => x.source?.transactionsBehind === 0);
    },
    { timeoutMs: 30_000, message: 'status: both sites up to date with the primary' },
  );
});
