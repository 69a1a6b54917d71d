/**
 * `mcrepl verify` against a real pipeline on servers of the test's own: it finds a key deleted by
 * hand on one server, a value changed by hand, and a key set by hand that the registry says was
 * deleted, naming server and key, and exits 1; `--repair` fixes all three and a second run exits
 * 0. Under a steady write load (~2,000 rows/s) a verify of a consistent pipeline finds nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MemcachedTextClient } from '../../scripts/memcached-text.js';
import { mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
let servers: PrivateMemcached[];
let file: string;

interface Report {
  keys: number;
  consistent: boolean;
  divergent: { dc: string; server: string; key: string; problem: string; repaired?: string }[];
}

before(async () => {
  servers = await Promise.all([0, 1, 2].map(() => PrivateMemcached.create()));
  await Promise.all(servers.map((s) => s.start()));
  env = await createTestEnv({ overrides: { 'datacenters.east': { servers: [servers[0]!.address, servers[1]!.address] }, 'datacenters.west': { servers: [servers[2]!.address] } } });
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'verify')");
  file = writeConfigFile(env.config);
});
after(async () => {
  await env?.teardown();
  await Promise.all(servers.map((s) => s.stop()));
});

async function everywhere(key: string, value: string | null): Promise<void> {
  await waitFor(async () => (await env.readEverywhere(key)).every((v) => (value === null ? v === null : v?.toString() === value)), { timeoutMs: 10_000, message: `${key} = ${value} everywhere` });
}

async function run(...args: string[]): Promise<{ code: number | null; report: Report; text: string }> {
  const r = await mcrepl(['-c', file, 'verify', '--json', ...args]);
  return { code: r.code, report: JSON.parse(r.stdout) as Report, text: r.stdout + r.stderr };
}

test('finds a key deleted by hand, a value changed by hand, a deleted key set by hand; --repair fixes them', { timeout: 120_000 }, async () => {
  const keys = Array.from({ length: 200 }, (_, i) => env.key(`v${i}`));
  await env.sql.query('START TRANSACTION');
  for (const k of keys) await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `value of ${k}`]);
  await env.sql.query('COMMIT');
  const gone = env.key('gone');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [gone, 'soon deleted']);
  await env.sql.query('CALL delete_key(1, ?)', [gone]);
  await everywhere(keys.at(-1)!, `value of ${keys.at(-1)}`);
  await everywhere(gone, null);

  const clean = await run();
  assert.equal(clean.code, 0, clean.text);
  assert.equal(clean.report.divergent.length, 0);
  assert.equal(clean.report.keys, 200);

  const [a, b] = [keys[10]!, keys[20]!];
  const by = (s: PrivateMemcached) => new MemcachedTextClient(s.address);
  const c0 = by(servers[0]!);
  const c1 = by(servers[1]!);
  const c2 = by(servers[2]!);
  await c0.delete(a);
  await c2.set(b, 'changed by hand');
  await c1.set(gone, 'set by hand');
  for (const c of [c0, c1, c2]) c.close();

  const found = await run();
  assert.equal(found.code, 1, found.text);
  const seen = found.report.divergent.map((d) => `${d.server} ${d.key} ${d.problem}`).sort();
  assert.deepEqual(seen, [`${servers[0]!.address} ${a} missing`, `${servers[1]!.address} ${gone} present, not in the registry`, `${servers[2]!.address} ${b} wrong value`].sort());
  const text = await mcrepl(['-c', file, 'verify']);
  assert.equal(text.code, 1);
  assert.match(text.stdout, new RegExp(`east ${servers[0]!.address.replace(/\./g, '\\.')} ${a}: missing`));

  const repaired = await run('--repair');
  assert.equal(repaired.code, 0, repaired.text);
  assert.deepEqual(repaired.report.divergent.map((d) => `${d.key} ${d.repaired?.replace(/ from .*/, '')}`).sort(), [`${a} copied`, `${b} copied`, `${gone} deleted`].sort());
  const again = await run();
  assert.equal(again.code, 0, again.text);
  assert.equal((await env.readEverywhere(a))[0]?.toString(), `value of ${a}`, 'the missing value copied back from another server');
  assert.equal((await env.readEverywhere(b))[2]?.toString(), `value of ${b}`, 'the wrong value replaced by the registry’s, from a server of the other data center');
});

test('under a steady write load of 2,000 rows/s, a verify of a consistent pipeline reports nothing', { timeout: 120_000 }, async () => {
  // Rows paced at 2,000/s: a multi-row INSERT into mc_storage (the plain-INSERT interface) every
  // 25 ms or so, each of the rows due by then.
  const RATE = 2_000;
  let stop = false;
  let written = 0;
  const t0 = Date.now();
  const load = (async () => {
    while (!stop) {
      const due = Math.floor(((Date.now() - t0) / 1000) * RATE) - written;
      if (due <= 0) {
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      const rows = Array.from({ length: Math.min(due, 500) }, (_, i) => [1, env.key('load'), `v${written + i}`, 0]);
      await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES ?', [rows]);
      written += rows.length;
    }
  })();
  try {
    await waitFor(() => written >= 4_000, { timeoutMs: 30_000, message: 'the load running' });
    const from = written;
    const started = Date.now();
    const r = await run();
    const rate = ((written - from) / (Date.now() - started)) * 1000;
    assert.equal(r.code, 0, r.text);
    assert.equal(r.report.divergent.length, 0);
    assert.ok(rate > RATE * 0.75, `the load went on during the verify (${Math.round(rate)} rows/s)`);
  } finally {
    stop = true;
    await load;
  }
});

test('the worker’s continuous sampled verification reports a damaged key in mcrepl_verify_divergent_keys', { timeout: 120_000 }, async () => {
  const { verifyDivergentKeys } = await import('../../src/observability/metrics.js');
  const own = await PrivateMemcached.create();
  await own.start();
  const e = await createTestEnv({ overrides: { 'datacenters.east': { servers: [own.address] }, 'datacenters.west': { servers: [servers[2]!.address] }, verify: { sampleKeys: 1_000, intervalS: 1 } } });
  try {
    await e.startPipeline();
    await e.sql.query("CALL create_namespace(1, 'sampled')");
    const k = e.key('sampled');
    await e.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'right']);
    await waitFor(async () => (await e.readEverywhere(k)).every((v) => v?.toString() === 'right'), { timeoutMs: 10_000, message: 'written' });
    const east = async () => (await verifyDivergentKeys.get()).values.find((v) => v.labels.dc === 'east')?.value;
    await waitFor(async () => (await east()) === 0, { timeoutMs: 20_000, message: 'a verification of east found nothing' });
    const c = new MemcachedTextClient(own.address);
    await c.set(k, 'wrong');
    c.close();
    await waitFor(async () => (await east()) === 1, { timeoutMs: 20_000, message: 'a verification of east found the damaged key' });
  } finally {
    await e.teardown();
    await own.stop();
  }
});
