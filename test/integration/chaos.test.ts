/**
 * The short chaos run (`npm run chaos` is the 5-minute one): every kind of fault injected at
 * random times under a randomized workload, then an independent checker compares every server
 * with what MySQL committed. It runs on a private stack of its own (ports 23400-23499).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../scripts/stack.js';

test('a short chaos run injects every kind of fault and ends with no divergent key', { timeout: 240_000 }, async (t) => {
  const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
    // On a timeout the run gets SIGTERM and stops its pipeline and private stack.
    const c = spawn(process.execPath, [path.join(repoRoot, 'dist', 'scripts', 'chaos.js'), '--duration', '70', '--dc-outage', '20'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], signal: t.signal });
    c.on('error', () => undefined); // the abort; 'exit' follows
    let text = '';
    c.stdout.on('data', (d: Buffer) => (text += d.toString()));
    c.stderr.on('data', (d: Buffer) => (text += d.toString()));
    c.on('exit', (code) => resolve({ code, text }));
  });
  assert.equal(out.code, 0, out.text);
  for (const kind of ['tailer', 'workers', 'redis', 'mariadb', 'memcached-kill', 'memcached-stop', 'dc-outage']) {
    assert.match(out.text, new RegExp(`^ +[\\d.]+s  ${kind} `, 'm'), `a ${kind} fault was injected`);
  }
  assert.match(out.text, /checker self-test: a stale value planted on one server was found/);
  assert.match(out.text, /^checked \d+ keys on 4 servers: \d+ comparisons, [1-9]\d* values present/m);
  assert.match(out.text, /^divergent keys: 0$/m);
});
