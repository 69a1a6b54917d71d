/**
 * MetaConnection against a scripted fake server (the real-memcached behaviour is in
 * test/integration/writers.test.ts and worker-faults.test.ts): a connection that closes with
 * requests unanswered is remembered until the server no longer lists it (`stats conns`).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { MetaWriter } from '../../src/sink/meta-client.js';

const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

test('a connection the server closed under unanswered requests is waited for until stats conns no longer lists it', async () => {
  const clientPorts: number[] = [];
  let listOld = true;
  const server = net.createServer((c) => {
    clientPorts.push(c.remotePort!);
    c.on('data', (d: Buffer) => {
      if (clientPorts.length === 1) {
        c.destroy(); // the first connection dies with the write unanswered
        return;
      }
      if (d.toString().startsWith('stats conns')) {
        const old = listOld ? `STAT 27:addr tcp:127.0.0.1:${clientPorts[0]}\r\n` : '';
        c.write(`${old}STAT 28:addr tcp:127.0.0.1:${clientPorts[1]}\r\nEND\r\n`);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const writer = new MetaWriter(`127.0.0.1:${(server.address() as net.AddressInfo).port}`, { timeoutMs: 2_000, connectTimeoutMs: 2_000 });
  try {
    const [outcome] = await writer.write([{ kind: 'set', key: Buffer.from('k'), value: Buffer.from('v'), exptime: 0 }]);
    assert.equal(outcome?.ok, false, 'the write failed with its connection');
    assert.equal(await writer.drained(), false, 'the server still lists the old connection');
    listOld = false;
    assert.equal(await writer.drained(), true, 'gone from the list: drained');
  } finally {
    await writer.close();
  }
});
