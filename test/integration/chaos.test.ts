/**
 * The short chaos run (`npm run chaos` is the 5-minute one): every kind of fault injected at
 * random times under a randomized workload with one bulk transaction of 50,000-80,000 rows, then
 * an independent checker compares every server with what MySQL committed. It runs on a private
 * stack of its own (ports 23400-23499, or from $CHAOS_PORT_BASE).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../scripts/stack.js';

test('a short chaos run injects every kind of fault and a bulk transaction and ends with no divergent key', { timeout: 330_000 }, async (t) => {
  const portBase = process.env.CHAOS_PORT_BASE ?? '23400';
  const args = ['--duration', '70', '--dc-outage', '20', '--bulk-rows', '50000-80000', '--port-base', portBase];
  const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
    // On a timeout the run gets SIGTERM and stops its pipeline and private stack.
    const c = spawn(process.execPath, [path.join(repoRoot, 'dist', 'scripts', 'chaos.js'), ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], signal: t.signal });
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
  assert.match(out.text, /checker self-test: a stale value planted on one server was found/);
  assert.match(out.text, /^checked \d+ keys on 4 servers: \d+ comparisons, [1-9]\d* values present/m);
  assert.match(out.text, /^divergent keys: 0$/m);
});
