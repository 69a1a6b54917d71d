/**
 * The status page on the metrics port, loaded in headless Chromium (Debian's, installed by the
 * test like the servers): what it shows (data centers, servers and their health, the active
 * tailer, queues, dead letters) matches `mcrepl status --json`; a phone-sized screenshot is kept
 * (`.stack/status-page/status-page.png`; docs/status-page.png is one of them).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { ensurePackages } from '../../scripts/stack.js';
import { McreplProcess, mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, layout, type TestEnv } from '../helpers/env.js';
import { freePort } from '../helpers/memcached-server.js';
import { waitFor } from '../helpers/wait-for.js';

const run = promisify(execFile);
let env: TestEnv | undefined;
let daemon: McreplProcess | undefined;
after(async () => {
  daemon?.kill('SIGTERM');
  await daemon?.exited;
  await env?.teardown();
});

const chromium = (args: string[]) => run('/usr/bin/chromium', ['--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--virtual-time-budget=10000', ...args], { maxBuffer: 32 * 1024 * 1024, timeout: 60_000 });

interface Status {
  tailer: string | null;
  deadLetters: { total: number };
  datacenters: { name: string; queued: { waiting: number; delayed: number }; servers: { address: string; health: string }[] }[];
}

test('the status page in headless Chromium shows what mcrepl status --json says', { timeout: 180_000 }, async () => {
  ensurePackages([{ bin: ['/usr/bin/chromium'], pkg: 'chromium' }]);
  env = await createTestEnv();
  const file = writeConfigFile(env.config);
  const port = await freePort();
  daemon = new McreplProcess(['-c', file, '--metrics-port', String(port), 'run']);
  await daemon.waitForOutput(/mcrepl ready/);
  await env.sql.query("CALL create_namespace(1, 'page')");
  const last = env.key('page');
  for (let i = 0; i < 20; i++) await env.sql.query('CALL set_key(1, ?, ?, 0)', [i === 19 ? last : env.key('page'), `v${i}`]);
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (1, 'a bad key', 'v', 0)");
  await waitFor(async () => (await env!.readEverywhere(last)).every((v) => v?.toString() === 'v19'), { timeoutMs: 15_000, message: 'the writes everywhere' });
  let st!: Status;
  await waitFor(async () => (st = JSON.parse((await mcrepl(['-c', file, 'status', '--json'])).stdout) as Status).deadLetters.total === 1, { timeoutMs: 15_000, message: 'the bad row dead-lettered' });

  const url = `http://127.0.0.1:${port}/`;
  const { stdout: dom } = await chromium(['--dump-dom', url]);
  assert.match(dom, /<code>[^<]+<\/code>/, 'rendered');
  assert.ok(dom.includes(`<div class="tailer"><code>${st.tailer}</code></div>`), `the active tailer ${st.tailer}`);
  assert.match(dom, /<div class="dead-letters">1<\/div>/);
  for (const d of st.datacenters) {
    const card = new RegExp(`<div class="card dc" data-dc="${d.name}">(.*?)</tbody></table></div>`, 's').exec(dom)?.[1];
    assert.ok(card, `a card for ${d.name}`);
    assert.match(card, new RegExp(`<div class="queued">${d.queued.waiting + d.queued.delayed}</div>`));
    for (const s of d.servers) {
      assert.match(card, new RegExp(`data-server="${s.address}".*?<span class="badge health ${s.health}">${s.health}</span>`), `${s.address} ${s.health}`);
    }
  }
  assert.match(dom, /apply lag<\/div><div>p50 [\d.]+ m?s · p99 [\d.]+ m?s/, 'the apply lag this process measured');

  // A phone-sized screenshot.
  const dir = path.join(layout.dir, 'status-page');
  fs.mkdirSync(dir, { recursive: true });
  const png = path.join(dir, 'status-page.png');
  fs.rmSync(png, { force: true });
  await chromium([`--screenshot=${png}`, '--window-size=412,1500', url]);
  const bytes = fs.readFileSync(png);
  assert.equal(bytes.subarray(1, 4).toString(), 'PNG');
  assert.ok(bytes.length > 10_000, `a real picture (${bytes.length} bytes)`);
});
