/**
 * The local stack script: `up` twice is fine, and `down` stops exactly what `up` started, by PID.
 * Uses a second stack in a temporary directory on another port block, so the one the tests run
 * on is not touched (and is checked to survive).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { down, stackLayout, status, up } from '../../scripts/stack.js';
import { layout } from '../helpers/env.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcrepl-stack-'));
const other = stackLayout(dir, 24300);
after(async () => {
  await down(other);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('up is idempotent and down stops exactly what up started', async () => {
  const mainBefore = status(layout).map((s) => s.pid);
  assert.ok(mainBefore.every((p) => p !== undefined), 'the test stack is up');

  const first = await up(other);
  assert.deepEqual(first.started, ['mariadb', 'redis', 'memcached east-1', 'memcached east-2', 'memcached west-1', 'memcached west-2']);
  const pids = status(other).map((s) => s.pid);
  assert.ok(pids.every((p) => p !== undefined && p > 0));

  const second = await up(other);
  assert.deepEqual(second.started, [], 'a second up starts nothing');
  assert.deepEqual(status(other).map((s) => s.pid), pids, 'and keeps the same processes');

  const stopped = await down(other);
  assert.equal(stopped.length, 6);
  assert.ok(status(other).every((s) => s.pid === undefined), 'all stopped');
  for (const pid of pids) {
    let alive = true;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      alive = !/\) Z /.test(stat);
    } catch {
      alive = false;
    }
    assert.equal(alive, false, `pid ${pid} is gone`);
  }
  assert.deepEqual(status(layout).map((s) => s.pid), mainBefore, 'the other stack was not touched');
  assert.deepEqual(await down(other), [], 'down again stops nothing');
});
