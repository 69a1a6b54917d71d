/**
 * `mcrepl dead-letters` end to end with real bad rows: a row with a space in its key (refused by
 * the tailer: it cannot be retried, and says why) and a value a memcached server refuses (items
 * of at most 2 KB there). Listed and shown with their ids; once that server takes bigger items,
 * `retry` writes the value (still the key's latest) and removes the dead letter; `purge` empties
 * the list.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mcrepl, writeConfigFile } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { PrivateMemcached } from '../helpers/memcached-server.js';
import { textGet } from '../../scripts/memcached-text.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv | undefined;
let small: PrivateMemcached | undefined;
after(async () => {
  await env?.teardown();
  await small?.stop();
});

interface Listed {
  id: number;
  ref: string;
  stage: string;
  server?: string;
  reason: string;
  op: { key?: string };
}

test('dead letters are listed, shown, retried where they can be rebuilt, and purged', { timeout: 120_000 }, async () => {
  small = await PrivateMemcached.create();
  small.extraArgs = ['-I', '2k', '-o', 'slab_chunk_max=1024'];
  await small.start();
  env = await createTestEnv({ overrides: { 'datacenters.east': { servers: [small.address] } } });
  await env.startPipeline();
  await env.sql.query("CALL create_namespace(1, 'dead')");
  const file = writeConfigFile(env.config);
  const dl = (...args: string[]) => mcrepl(['-c', file, 'dead-letters', ...args]);

  const big = env.key('big');
  const value = 'x'.repeat(4_000);
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (1, 'a bad key', 'v', 0)");
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [big, value]);
  let listed: Listed[] = [];
  await waitFor(async () => (listed = JSON.parse((await dl('list', '--json')).stdout) as Listed[]).length >= 2, { timeoutMs: 20_000, message: 'two dead letters' });
  const bad = listed.find((e) => e.stage === 'tailer')!;
  const refused = listed.find((e) => e.stage === 'worker')!;
  assert.match(bad.reason, /space/);
  assert.match(refused.reason, /too large/i);
  assert.equal(refused.op.key, big);
  assert.equal(refused.server, small.address);

  const text = await dl('list');
  assert.equal(text.code, 0);
  assert.match(text.stdout, new RegExp(`^ +${refused.ref}  .*worker east ${small.address.replace(/\./g, '\\.')}  set ${big} \\(4000 bytes\\): .*too large`, 'm'));
  const shown = await dl('show', refused.ref);
  assert.equal(shown.code, 0, shown.stderr);
  assert.equal((JSON.parse(shown.stdout) as { retry: { value?: string } }).retry.value, Buffer.from(value).toString('base64'), 'what a retry needs is kept');

  // The bad row cannot be rebuilt; the refused value can, once the server takes it.
  const notRetried = await dl('retry', bad.ref);
  assert.equal(notRetried.code, 1);
  assert.match(notRetried.stdout, new RegExp(`^${bad.ref}: not retried: the row itself was refused .*space`, 'm'));
  await small.stop();
  small.extraArgs = [];
  await small.start();
  const retried = await dl('retry', refused.ref);
  assert.equal(retried.code, 0, retried.stdout + retried.stderr);
  assert.match(retried.stdout, new RegExp(`^${refused.ref}: retried: written to ${small.address.replace(/\./g, '\\.')}`, 'm'));
  assert.equal((await textGet(small.address, big))?.toString(), value);
  const after1 = JSON.parse((await dl('list', '--json')).stdout) as Listed[];
  assert.deepEqual(after1.map((e) => e.ref), [bad.ref], 'the retried one is gone from the list');

  const purged = await dl('purge');
  assert.equal(purged.code, 0);
  assert.match(purged.stdout, /1 dead letter removed/);
  assert.deepEqual(JSON.parse((await dl('list', '--json')).stdout), []);
});
