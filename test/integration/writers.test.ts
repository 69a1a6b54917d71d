/**
 * Both `MemcachedWriter`s (meta, the default, and memjs) against a real memcached of their own:
 * what they write is what a plain client reads; a request the server refuses for good is told
 * apart from one worth retrying; a server that is not there, stops answering (SIGSTOP) or is
 * killed (-9) and restarted under a busy connection never leaves a request unanswered past its
 * deadline (memjs alone leaves the ones in flight pending forever), and the restart shows as a
 * new identity.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { after, afterEach, describe, test } from 'node:test';
import { textGet } from '../../scripts/memcached-text.js';
import { memcachedArgs } from '../../scripts/stack.js';
import { silentLogger } from '../../src/observability/logger.js';
import { MemjsWriter, type MemcachedWriter, type WriteOutcome } from '../../src/sink/memcached-writer.js';
import { MetaClient, MetaWriter } from '../../src/sink/meta-client.js';
import { layout } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

const port = layout.mariadb.port + 40;
const address = `127.0.0.1:${port}`;
const timeoutMs = 500;
let server: ChildProcess | undefined;

async function startServer(): Promise<void> {
  server = spawn('/usr/bin/memcached', memcachedArgs(port), { stdio: 'ignore' });
  await waitFor(() => new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), { message: 'memcached to listen' });
}

async function killServer(): Promise<void> {
  const s = server;
  if (!s || s.exitCode !== null || s.signalCode !== null) return;
  s.kill('SIGCONT');
  const exited = new Promise((r) => s.once('exit', r));
  s.kill('SIGKILL');
  await exited;
}

const writers: [string, () => MemcachedWriter][] = [
  ['meta', () => new MetaWriter(address, { timeoutMs, connectTimeoutMs: 500 })],
  ['memjs', () => new MemjsWriter(address, { timeoutMs, connectTimeoutMs: 500, logger: silentLogger })],
];

const set = (key: string, value: string | Buffer, exptime = 0) => ({ kind: 'set' as const, key: Buffer.from(key), value: Buffer.isBuffer(value) ? value : Buffer.from(value), exptime });
const del = (key: string) => ({ kind: 'delete' as const, key: Buffer.from(key) });

afterEach(killServer);
after(killServer);

for (const [name, create] of writers) {
  describe(`the ${name} writer`, () => {
    test('writes what a plain client reads: sets, TTLs, deletes (also of missing keys), binary values, flush_all', async () => {
      await startServer();
      const w = create();
      try {
        const binary = Buffer.from([0, 13, 10, 255, 32, 0]);
        const outcomes = await w.write([set('w:a', '1'), set('w:b', binary), set('w:ttl', 'short', 1), set('w:gone', 'x'), del('w:gone'), del('w:never-there'), set('w:a', '2')]);
        assert.deepEqual(outcomes, Array(7).fill({ ok: true }));
        assert.equal((await textGet(address, 'w:a'))?.toString(), '2', 'requests are applied in order');
        assert.deepEqual(await textGet(address, 'w:b'), binary);
        assert.equal(await textGet(address, 'w:gone'), null);
        assert.equal((await textGet(address, 'w:ttl'))?.toString(), 'short');
        await waitFor(async () => (await textGet(address, 'w:ttl')) === null, { timeoutMs: 4_000, message: 'the TTL to expire' });
        // A big batch, pipelined: every request answered, every value there.
        const many = Array.from({ length: 20_000 }, (_, i) => set(`w:many:${i}`, `v${i}`));
        const r = await w.write(many);
        assert.equal(r.filter((o) => o.ok).length, many.length);
        assert.equal((await textGet(address, 'w:many:19999'))?.toString(), 'v19999');
        await w.flushAll();
        assert.equal(await textGet(address, 'w:a'), null, 'flush_all empties the server');
      } finally {
        await w.close();
      }
    });

    test('a value over the item size is refused for good; the requests around it succeed', async () => {
      await startServer();
      const w = create();
      try {
        const outcomes = await w.write([set('w:before', 'b'), set('w:huge', Buffer.alloc(1_100_000, 1)), set('w:after', 'a')]);
        assert.deepEqual(outcomes[0], { ok: true });
        assert.equal(outcomes[1]!.ok, false);
        assert.equal((outcomes[1] as { retriable: boolean }).retriable, false, `permanent: ${JSON.stringify(outcomes[1])}`);
        assert.match((outcomes[1] as { error: string }).error, /too large/i);
        assert.deepEqual(outcomes[2], { ok: true });
        assert.equal((await textGet(address, 'w:after'))?.toString(), 'a');
      } finally {
        await w.close();
      }
    });

    test('a server that is not there fails retriably; once it listens, the same writer works', async () => {
      const w = create();
      try {
        const [o] = await w.write([set('w:x', '1')]);
        assert.equal(o!.ok, false);
        assert.equal((o as { retriable: boolean }).retriable, true);
        await assert.rejects(w.identity());
        await startServer();
        await waitFor(async () => (await w.write([set('w:x', '2')]))[0]!.ok, { timeoutMs: 5_000, message: 'writes to work once the server is up' });
        assert.equal((await textGet(address, 'w:x'))?.toString(), '2');
        assert.ok((await w.identity()).pid > 0);
      } finally {
        await w.close();
      }
    });

    test('a server that stops answering (SIGSTOP) fails the requests in flight in time, retriably', async () => {
      await startServer();
      const w = create();
      try {
        await w.identity();
        server!.kill('SIGSTOP');
        const started = Date.now();
        const outcomes = await w.write(Array.from({ length: 100 }, (_, i) => set(`w:stop:${i}`, 'v')));
        const took = Date.now() - started;
        assert.ok(outcomes.every((o) => !o.ok && o.retriable), 'every request failed, retriably');
        assert.ok(took <= timeoutMs * 2 + 500, `answered within the deadline (${took} ms)`);
        server!.kill('SIGCONT');
        await waitFor(async () => (await w.write([set('w:stop:again', 'v')]))[0]!.ok, { timeoutMs: 5_000, message: 'writes to work again' });
      } finally {
        await w.close();
      }
    });

    test('kill -9 and restart under a busy connection: every request is answered, in time, and the restart is seen', async () => {
      await startServer();
      const writer = create();
      const before = await writer.identity();
      let stop = false;
      let slowest = 0;
      let failures = 0;
      let writes = 0;
      // Keep the connection busy, as a worker under load does, so memjs's idle timeout never fires.
      const load = (async () => {
        for (let i = 0; !stop; i++) {
          const started = Date.now();
          const outcomes: WriteOutcome[] = await writer.write([set(`k${i % 50}`, 'v')]);
          slowest = Math.max(slowest, Date.now() - started);
          writes++;
          if (!outcomes[0]!.ok) {
            failures++;
            assert.equal((outcomes[0] as { retriable: boolean }).retriable, true, 'a lost connection is worth retrying');
            await new Promise((r) => setTimeout(r, 5));
          }
        }
      })();
      const stats = (async () => {
        while (!stop) {
          await writer.identity().catch(() => undefined);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      await waitFor(() => writes > 1000, { message: 'writes flowing' });
      await killServer();
      await startServer();
      const afterRestart = writes;
      await waitFor(() => writes > afterRestart + 1000, { timeoutMs: 10_000, message: 'writes flowing again after the restart (none stuck)' });
      stop = true;
      await Promise.all([load, stats]);
      assert.ok(failures > 0, 'the requests in flight at the kill failed');
      assert.ok(slowest <= timeoutMs * 2 + 500, `no request waited past its deadline (slowest ${slowest} ms)`);
      const now = await writer.identity();
      assert.notEqual(now.pid, before.pid, 'the restarted server has a new identity');
      await writer.close();
    });
  });
}

describe('the warm client', () => {
  test('copies what is listed and answers at once for a batch of keys that are all gone (a warm once hung on one)', { timeout: 5_000 }, async () => {
    await startServer(); // each test's server is killed after it
    const client = new MetaClient(address, timeoutMs);
    try {
      await client.setWithTtl([]); // every listed key expired or deleted before it was read
      await client.setWithTtl([{ key: Buffer.from('warm:k'), value: Buffer.from('v'), ttl: 60 }]);
      const [got, gone] = await client.getWithTtl([Buffer.from('warm:k'), Buffer.from('warm:missing')]);
      assert.equal(got?.value.toString(), 'v');
      assert.ok(got!.ttl > 0 && got!.ttl <= 60, `ttl ${got?.ttl}`);
      assert.equal(gone, null);
      assert.deepEqual(await client.getWithTtl([]), []);
    } finally {
      client.close();
    }
  });
});
