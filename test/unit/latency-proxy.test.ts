import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { LatencyProxy } from '../../scripts/latency-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

/** An echo server that counts what it received. */
async function echoServer(): Promise<{ port: number; received: () => number; close: () => Promise<void> }> {
  let received = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('data', (d) => {
      received += d.length;
      s.write(d);
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    received: () => received,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function connect(port: number): Promise<{ socket: net.Socket; got: () => string }> {
  let got = '';
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('data', (d) => (got += d.toString()));
  socket.on('error', () => undefined);
  await new Promise<void>((r) => socket.once('connect', r));
  return { socket, got: () => got };
}

const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('every round trip through the proxy takes at least twice the one-way delay, bytes in order', async () => {
  const echo = await echoServer();
  const proxy = new LatencyProxy({ targetPort: echo.port, delayMs: 25 });
  await proxy.start();
  cleanup.push(() => echo.close(), () => proxy.stop());
  const c = await connect(proxy.port);
  cleanup.push(() => void c.socket.destroy());
  const started = Date.now();
  for (let i = 0; i < 50; i++) c.socket.write(`${i},`);
  const expected = Array.from({ length: 50 }, (_, i) => `${i},`).join('');
  await waitFor(() => c.got() === expected, { message: 'every chunk echoed, in order' });
  const rtt = Date.now() - started;
  assert.ok(rtt >= 50, `round trip ${rtt} ms`);

  proxy.setDelay(150);
  const before = Date.now();
  c.socket.write('x');
  await waitFor(() => c.got().endsWith('x'));
  assert.ok(Date.now() - before >= 300, 'the new delay applies to what is sent from now on');
});

test('a cut carries nothing, either way, on open and new connections; the heal delivers what waited, in order', async () => {
  const echo = await echoServer();
  const proxy = new LatencyProxy({ targetPort: echo.port, delayMs: 1 });
  await proxy.start();
  cleanup.push(() => echo.close(), () => proxy.stop());
  const open = await connect(proxy.port);
  cleanup.push(() => void open.socket.destroy());
  open.socket.write('a');
  await waitFor(() => open.got() === 'a');

  proxy.cut();
  const late = await connect(proxy.port); // accepted, but not through to the server yet
  cleanup.push(() => void late.socket.destroy());
  open.socket.write('b');
  open.socket.write('c');
  late.socket.write('z');
  await waitFor(() => proxy.stats.bytesToServer === 4, { message: 'the proxy holds the bytes sent during the cut' });
  assert.equal(echo.received(), 1, 'nothing reached the server during the cut');
  assert.equal(proxy.stats.connections, 2);

  proxy.heal();
  await waitFor(() => open.got() === 'abc' && late.got() === 'z', { message: 'what waited arrives after the heal, in order' });
  assert.equal(echo.received(), 4);
});
