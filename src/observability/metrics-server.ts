/**
 * The daemons' HTTP endpoint (`metrics.port`, --metrics-port): `/metrics` (Prometheus),
 * `/healthz` (200 unless a component failed) and `/readyz` (200 when every component runs, or
 * stands by for its lease), both as JSON listing the components and their states.
 */
import http from 'node:http';
import { contentType, localSummary, scrape } from './metrics.js';
import { STATUS_PAGE } from './status-page.js';

export interface ComponentHealth {
  name: string;
  /** A Lifecycle state: created, waiting-for-lease, starting, running, stopping, stopped, failed. */
  state: string;
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(host: string, port: number, components: () => ComponentHealth[], status?: () => Promise<unknown>): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'GET only' });
    if (path === '/metrics') {
      scrape().then(
        (text) => {
          res.writeHead(200, { 'content-type': contentType });
          res.end(text);
        },
        (err: unknown) => json(500, { error: String(err) }),
      );
      return;
    }
    if (path === '/' && status) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(STATUS_PAGE);
      return;
    }
    if (path === '/status.json' && status) {
      Promise.all([status(), localSummary()]).then(
        ([s, local]) => json(200, { status: s, local }),
        (err: unknown) => json(500, { error: String(err) }),
      );
      return;
    }
    const list = components();
    if (path === '/healthz') {
      const failed = list.filter((c) => c.state === 'failed');
      return json(failed.length ? 503 : 200, { status: failed.length ? 'failed' : 'ok', components: list });
    }
    if (path === '/readyz') {
      const ready = list.length > 0 && list.every((c) => c.state === 'running' || c.state === 'waiting-for-lease');
      return json(ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', components: list });
    }
    json(404, { error: 'not found', paths: ['/metrics', '/healthz', '/readyz', ...(status ? ['/', '/status.json'] : [])] });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
