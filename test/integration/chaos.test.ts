/**
 * The short chaos run (`npm run chaos` is the 5-minute one): every kind of fault injected at
 * random times under a randomized workload with one bulk transaction of 50,000-80,000 rows, then
 * an independent checker compares every server with what MySQL committed (east shards its keys
 * over three servers with ketama and replicas 2: each key is judged on the servers it belongs
 * on). It runs on a private
 * stack of its own (ports 23400-23499, or from $CHAOS_PORT_BASE). The second run places the data
 * centers in two sites (`--sites`): west with its own Redis and tailers, reading a replica of the
 * primary across a WAN link that the run cuts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { repoRoot } from '../../scripts/stack.js';

/** Runs `npm run chaos` with `args` on the test's ports; its exit code and everything it printed. */
function chaos(t: TestContext, args: string[]): Promise<{ code: number | null; text: string }> {
  const portBase = process.env.CHAOS_PORT_BASE ?? '23400';
  return new Promise<{ code: number | null; text: string }>((resolve) => {
    // On a timeout the run gets SIGTERM and stops its pipeline and private stack.
    const c = spawn(process.execPath, [path.join(repoRoot, 'dist', 'scripts', 'chaos.js'), ...args, '--port-base', portBase], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], signal: t.signal });
    c.on('error', () => undefined); // the abort; 'exit' follows
    let text = '';
    c.stdout.on('data', (d: Buffer) => (text += d.toString()));
    c.stderr.on('data', (d: Buffer) => (text += d.toString()));
    // Stopped before the test's own timeout, so that what it printed is shown.
    const timer = setTimeout(() => c.kill('SIGTERM'), 300_000);
    c.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, text });
    });
  });
}

test('a short chaos run (east sharded: ketama, replicas 2) injects every kind of fault and a bulk transaction and ends with no divergent key', { timeout: 330_000 }, async (t) => {
  const out = await chaos(t, ['--ketama', '--duration', '70', '--dc-outage', '20', '--bulk-rows', '50000-80000']);
  assert.equal(out.code, 0, out.text);
  // Every kind comes once before any repeats, whatever the seed.
  for (const kind of ['tailer', 'tailer-stop', 'workers', 'workers-stop', 'redis', 'mariadb', 'memcached-kill', 'memcached-stop', 'dc-outage']) {
    assert.match(out.text, new RegExp(`^ +[\\d.]+s  ${kind} `, 'm'), `a ${kind} fault was injected`);
  }
  // The paused lease holders were taken over, and stood by once continued.
  assert.match(out.text, /^ +[\d.]+s  tailer-stop .* took over after [\d.]+ s and went on; then SIGCONT: it found its lease lost and stands by$/m);
  assert.match(out.text, /^ +[\d.]+s  workers-stop .* took over after [\d.]+ s and went on; then SIGCONT: it found its lease lost and stands by$/m);
  // The first bulk transaction comes at 15-30% of the run (retried if a fault breaks it), and its
  // namespace is flushed.
  const bulk = /^ +[\d.]+s  #\d+ (\d+) rows into namespace \d+ \(\d+ over workload keys\): committed in [\d.]+ s, .*; its namespace flushed at /m.exec(out.text);
  assert.ok(bulk, 'a bulk transaction was committed and its namespace flushed');
  assert.ok(Number(bulk[1]) >= 50_000, 'of at least 50,000 rows');
  assert.match(out.text, /checker self-test: a stale value planted on one server was found; a key planted on a server it does not belong on was found/);
  assert.match(out.text, /^checked \d+ keys on 5 servers: \d+ comparisons, [1-9]\d* values present/m);
  assert.match(out.text, /^divergent keys: 0$/m);
});

test('a short chaos run over two sites (a replica across a WAN link for west) injects every kind of fault and ends with no divergent key', { timeout: 330_000 }, async (t) => {
  const out = await chaos(t, ['--sites', '--duration', '80', '--dc-outage', '15', '--bulk-rows', '20000-40000']);
  assert.equal(out.code, 0, out.text);
  for (const kind of ['tailer', 'tailer-stop', 'workers', 'workers-stop', 'redis', 'mariadb', 'memcached-kill', 'memcached-stop', 'dc-outage', 'wan-cut', 'replica', 'replica-stop']) {
    assert.match(out.text, new RegExp(`^ +[\\d.]+s  ${kind} `, 'm'), `a ${kind} fault was injected`);
  }
  assert.match(out.text, /site west: Redis on \d+, a replica of the primary on \d+/);
  // The replica stood still: west's tailer read the primary meanwhile (or the run reports a PROBLEM).
  assert.match(out.text, /^ +[\d.]+s  replica-stop .* west's tailer read the primary after [\d.]+ s and went on/m);
  assert.match(out.text, /^ +[\d.]+s  wan-cut .* carried nothing for [\d.]+ s, then healed$/m);
  assert.match(out.text, /checker self-test: a stale value planted on one server was found\n/);
  assert.match(out.text, /^checked \d+ keys on 4 servers: \d+ comparisons, [1-9]\d* values present/m);
  assert.match(out.text, /^divergent keys: 0$/m);
  assert.match(out.text, /^pipeline problems: 0$/m);
});
