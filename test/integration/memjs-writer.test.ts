/**
 * The memjs writer against a real memcached killed (-9) and restarted under a busy connection:
 * no request may stay unanswered (memjs alone leaves the ones in flight pending forever while
 * the connection stays busy), and the restart shows as a new identity.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { after, test } from 'node:test';
import { memcachedArgs } from '../../scripts/stack.js';
import { silentLogger } from '../../src/observability/logger.js';
import { MemjsWriter, type WriteOutcome } from '../../src/sink/memcached-writer.js';
import { layout } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

const port = layout.mariadb.port + 40;
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
  const exited = new Promise((r) => s.once('exit', r));
  s.kill('SIGKILL');
  await exited;
}

after(killServer);

test('kill -9 and restart under a busy connection: every request is answered, in time, and the restart is seen', async () => {
  await startServer();
  const timeoutMs = 500;
  const writer = new MemjsWriter(`127.0.0.1:${port}`, { timeoutMs, connectTimeoutMs: 500, logger: silentLogger });
  const before = await writer.identity();
  let stop = false;
  let slowest = 0;
  let failures = 0;
  let writes = 0;
  // Keep the connection busy, as a worker under load does, so memjs's idle timeout never fires.
  const load = (async () => {
    for (let i = 0; !stop; i++) {
      const started = Date.now();
      const outcomes: WriteOutcome[] = await writer.write([{ kind: 'set', key: Buffer.from(`k${i % 50}`), value: Buffer.from('v'), exptime: 0 }]);
      slowest = Math.max(slowest, Date.now() - started);
      writes++;
      if (!outcomes[0]!.ok) {
        failures++;
        assert.equal((outcomes[0] as { retriable: boolean }).retriable, true, 'a lost connection is worth retrying');
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
