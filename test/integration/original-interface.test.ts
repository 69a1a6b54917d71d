import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestEnv, type TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';
import { textDelete } from '../../scripts/memcached-text.js';

let env: TestEnv;
before(async () => {
  env = await createTestEnv();
  await env.startPipeline();
});
after(async () => env?.teardown());

test('the original interface works verbatim and reaches every server of every data center within one second', async () => {
  // These keys are fixed by the original walkthrough, so clear what an earlier run left.
  for (const k of ['12345678901234567890123456789012', '12345678901234567890123456789ABC']) {
    await Promise.all(env.servers.map((s) => textDelete(s, k)));
    assert.deepEqual(await env.readEverywhere(k), [null, null, null, null]);
  }
  // Exactly the statements of the original BLACKHOLE + memcached UDF walkthrough.
  // As in the original, namespaces are created by the DBA; the application only calls set_key.
  await env.root.query("insert into mc_namespaces( ns_id, ns_name ) values ( 1, 'my_namespace' );");
  await env.sql.query("call set_key( 1, '12345678901234567890123456789012', 'l4l4nd', 100 );");
  await env.sql.query("call set_key( 1, '12345678901234567890123456789ABC', 'w4st3l4nd', 100 );");
  const committedAt = Date.now();

  const values = await waitFor(
    async () => {
      const v = await env.readEverywhere('12345678901234567890123456789ABC');
      return v.every((b) => b?.toString() === 'w4st3l4nd') ? v : undefined;
    },
    { timeoutMs: 1_000, message: 'w4st3l4nd on every server' },
  );
  const elapsed = Date.now() - committedAt;
  assert.equal(values.length, 4, 'two data centers of two servers each');
  assert.ok(elapsed <= 1_000, `took ${elapsed} ms`);
  for (const v of await env.readEverywhere('12345678901234567890123456789012')) assert.equal(v?.toString(), 'l4l4nd');
});
