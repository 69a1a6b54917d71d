/**
 * Prometheus (Debian's, started by the test on a loopback port) scrapes every daemon of a
 * running pipeline (`mcrepl tailer` and one `mcrepl worker` per data center, each with
 * --metrics-port). Through Prometheus's HTTP API: mcrepl_apply_lag_seconds has samples for both
 * data centers, and mcrepl_server_up drops to 0 for a memcached server that is stopped. The
 * daemons' /healthz and /readyz answer as JSON; promtool accepts the shipped alert rules.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { ensureMonitoring, repoRoot } from '../../scripts/stack.js';
import { McreplProcess, writeConfigFile } from '../helpers/cli.js';
import { stopChild } from '../helpers/child.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached, freePort } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';

const procs: McreplProcess[] = [];
let prometheus: ChildProcess | undefined;
let env: TestEnv | undefined;
let servers: PrivateMemcached[] = [];

after(async () => {
  for (const p of procs) p.kill('SIGTERM');
  await Promise.all(procs.map((p) => p.exited));
  await stopChild(prometheus);
  await env?.teardown();
  await Promise.all(servers.map((s) => s.stop()));
});

async function query(port: number, promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  if (body.status !== 'success') throw new Error(`prometheus: ${JSON.stringify(body)}`);
  return body.data.result;
}

test('promtool accepts the shipped alert rules', () => {
  ensureMonitoring();
  const out = execFileSync('/usr/bin/promtool', ['check', 'rules', path.join(repoRoot, 'deploy', 'prometheus', 'alerts.yml')]).toString();
  assert.match(out, /SUCCESS: \d+ rules found/);
});

test('Prometheus scrapes every daemon: apply lag for both data centers, a stopped server seen down', { timeout: 180_000 }, async () => {
  ensureMonitoring();
  servers = await Promise.all([0, 1].map(() => PrivateMemcached.create()));
  await Promise.all(servers.map((s) => s.start()));
  env = await createTestEnv({ partitions: 2, overrides: { 'datacenters.east': { servers: servers.map((s) => s.address) }, 'worker.probeIntervalMs': 100 } });
  const file = writeConfigFile(env.config);
  const ports = { east: await freePort(), west: await freePort(), tailer: await freePort(), prometheus: await freePort() };
  const daemon = (port: number, ...args: string[]) => {
    const p = new McreplProcess(['-c', file, '--metrics-port', String(port), ...args]);
    procs.push(p);
    return p;
  };
  const east = daemon(ports.east, 'worker', 'east');
  const west = daemon(ports.west, 'worker', 'west');
  await Promise.all([east.waitForOutput(/mcrepl ready/), west.waitForOutput(/mcrepl ready/)]);
  const tailer = daemon(ports.tailer, 'tailer');
  await tailer.waitForOutput(/mcrepl ready/);

  // Health, as an orchestrator asks.
  for (const port of [ports.east, ports.tailer]) {
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    const h = (await health.json()) as { status: string; components: { name: string; state: string }[] };
    assert.equal(h.status, 'ok');
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, { timeoutMs: 10_000, message: `/readyz of :${port}` });
  }

  // Prometheus, scraping every second.
  const dir = path.join(layout.dir, 'prometheus', env.id);
  fs.mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(
    conf,
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      'rule_files: [' + JSON.stringify(path.join(repoRoot, 'deploy', 'prometheus', 'alerts.yml')) + ']',
      'scrape_configs:',
      '  - job_name: mcrepl',
      `    static_configs: [{ targets: [${Object.values({ a: ports.east, b: ports.west, c: ports.tailer }).map((p) => `"127.0.0.1:${p}"`).join(', ')}] }]`,
      '',
    ].join('\n'),
  );
  prometheus = spawn('/usr/bin/prometheus', [`--config.file=${conf}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${ports.prometheus}`], { stdio: 'ignore' });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${ports.prometheus}/-/ready`).catch(() => undefined))?.status === 200, { timeoutMs: 30_000, message: 'prometheus ready' });
  await waitFor(async () => (await query(ports.prometheus, 'up{job="mcrepl"} == 1')).length === 3, { timeoutMs: 30_000, message: 'every daemon scraped' });

  // Writes: apply lag observed in both data centers.
  await env.sql.query("CALL create_namespace(1, 'metrics')");
  for (let i = 0; i < 50; i++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('m'), `v${i}`]);
  let lag: { metric: Record<string, string>; value: [number, string] }[] = [];
  await waitFor(async () => (lag = await query(ports.prometheus, 'sum by (dc) (mcrepl_apply_lag_seconds_count) > 0')).length === 2, {
    timeoutMs: 30_000,
    message: () => `apply lag samples for both data centers (have ${JSON.stringify(lag.map((r) => r.metric))})`,
  });
  assert.deepEqual(lag.map((r) => r.metric.dc).sort(), ['east', 'west']);
  const applied = await query(ports.prometheus, 'sum by (dc, op) (mcrepl_ops_applied_total{op="set"})');
  assert.ok(applied.some((r) => r.metric.dc === 'east' && Number(r.value[1]) >= 100), `ops applied in east (2 servers × 50 sets): ${JSON.stringify(applied)}`);
  const held = await query(ports.prometheus, 'mcrepl_lease_held == 1');
  assert.deepEqual(held.map((r) => `${r.metric.role} ${r.metric.name}`).sort(), ['tailer default', 'worker east', 'worker west']);
  assert.ok((await query(ports.prometheus, 'mcrepl_checkpoint_age_seconds')).length === 1, 'the checkpoint age');
  assert.ok((await query(ports.prometheus, 'mcrepl_queue_jobs{dc="east"}')).length > 0, 'queue depths');

  // A server stops: seen down through Prometheus.
  const stopped = servers[1]!;
  assert.equal((await query(ports.prometheus, `mcrepl_server_up{server="${stopped.address}"}`))[0]?.value[1], '1');
  await stopped.stop();
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('m'), 'after']);
  await waitFor(async () => (await query(ports.prometheus, `mcrepl_server_up{server="${stopped.address}"} == 0`)).length === 1, { timeoutMs: 30_000, message: 'mcrepl_server_up 0 for the stopped server' });
  assert.equal((await query(ports.prometheus, `mcrepl_server_up{server="${servers[0]!.address}"}`))[0]?.value[1], '1', 'the other one still up');
});
