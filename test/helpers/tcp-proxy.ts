/**
 * A TCP proxy a test can freeze: connections open through it stop carrying bytes, in either
 * direction, without being closed, which is how a connection dies silently (a dropped NAT
 * entry, a cable pulled between two switches). Connections opened after the freeze flow.
 *
 * It can also hold: what clients of the connections open now send is kept back, not lost, and
 * delivered to the server on `release`, even if the client has closed meanwhile. That is a
 * server that works through its old socket buffer late (it was paused, or the bytes were stuck
 * on the way), after anything sent on newer connections.
 */
import net from 'node:net';

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly pairs: {
    client: net.Socket;
    upstream: net.Socket;
    frozen: boolean;
    held?: Buffer[];
    clientGone?: boolean;
    openedAt: number;
    /** Bytes from the client, with when they arrived (ms). */
    received: { at: number; bytes: number }[];
  }[] = [];
  port = 0;

  constructor(private readonly targetPort: number, private readonly targetHost = '127.0.0.1') {}

  async start(): Promise<number> {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
      const pair: (typeof this.pairs)[number] = { client, upstream, frozen: false, openedAt: Date.now(), received: [] };
      this.pairs.push(pair);
      client.on('data', (d) => {
        pair.received.push({ at: Date.now(), bytes: d.length });
        if (pair.held) pair.held.push(d);
        else if (!pair.frozen) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (!pair.frozen && !client.destroyed) client.write(d);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      // A held connection's bytes still reach the server after its client closed (release).
      const clientClosed = () => (pair.held ? (pair.clientGone = true) : close());
      client.on('close', clientClosed);
      upstream.on('close', close);
      client.on('error', clientClosed);
      upstream.on('error', close);
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server!.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Every connection open now stops carrying bytes (and stays open). */
  freeze(): number {
    const live = this.pairs.filter((p) => !p.client.destroyed && !p.frozen);
    for (const p of live) p.frozen = true;
    return live.length;
  }

  /** Bytes clients of connections opened before `openedBefore` sent after `since` (ms). */
  bytesSince(since: number, openedBefore: number): number {
    let n = 0;
    for (const p of this.pairs) if (p.openedAt < openedBefore) for (const r of p.received) if (r.at > since) n += r.bytes;
    return n;
  }

  /** What the clients of every connection open now send is kept back until `release`. */
  hold(): number {
    const live = this.pairs.filter((p) => !p.client.destroyed && !p.frozen && !p.held);
    for (const p of live) p.held = [];
    return live.length;
  }

  /** Delivers what was held, in order; a connection whose client closed meanwhile then ends. */
  release(): void {
    for (const p of this.pairs) {
      if (!p.held) continue;
      const held = Buffer.concat(p.held);
      p.held = undefined;
      p.upstream.write(held);
      if (p.clientGone) p.upstream.end();
    }
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
