/**
 * A TCP proxy a test can freeze: connections open through it stop carrying bytes, in either
 * direction, without being closed, which is how a connection dies silently (a dropped NAT
 * entry, a cable pulled between two switches). Connections opened after the freeze flow.
 */
import net from 'node:net';

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly pairs: { client: net.Socket; upstream: net.Socket; frozen: boolean }[] = [];
  port = 0;

  constructor(private readonly targetPort: number, private readonly targetHost = '127.0.0.1') {}

  async start(): Promise<number> {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
      const pair = { client, upstream, frozen: false };
      this.pairs.push(pair);
      client.on('data', (d) => {
        if (!pair.frozen) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (!pair.frozen) client.write(d);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
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

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
