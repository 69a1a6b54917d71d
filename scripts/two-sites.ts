/**
 * A second site beside the local stack, for `npm run wan` and `npm run chaos -- --sites`:
 * `west` gets a Redis of its own and a MariaDB replica of the stack's primary as its binlog
 * source, and everything that crosses between the sites (replication, and west's tailer reaching
 * the primary while its replica is far behind) goes through one latency proxy, the WAN, which
 * the caller can slow, cut and heal. `east` is the stack as it is (the primary, the stack's
 * Redis). Loopback only.
 */
import path from 'node:path';
import type { ResolvedConfig } from '../src/config/schema.js';
import { LatencyProxyProcess } from './latency-proxy.js';
import { startReplica, type Replica } from './replica.js';
import { killRedis, startRedis, type StackLayout } from './stack.js';

export interface WestSite {
  /** The WAN: between the primary and everything of west that reaches it. */
  wan: LatencyProxyProcess;
  replica: Replica;
  /** The stack's layout with west's Redis as its `redis` (for startRedis / killRedis). */
  redisLayout: StackLayout;
  /** `sites` for `config`: east on the stack's Redis and the primary; west on its own. */
  sites(config: ResolvedConfig, opts: { prefix: string; fallbackBehind: number }): NonNullable<ResolvedConfig['sites']>;
  stop(): Promise<void>;
}

/**
 * Starts west: the WAN proxy (`rttMs` round trip), the replica on the primary's port + 3
 * replicating through it (reconnecting 1 s after a failed attempt), and west's Redis on
 * `redisPort`. Call before the schema is installed, so that it reaches the replica.
 */
export async function startWestSite(layout: StackLayout, opts: { rttMs: number; redisPort: number; replicaArgs?: string[] }): Promise<WestSite> {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    stops.length = 0;
  };
  try {
    const wan = new LatencyProxyProcess({ targetPort: layout.mariadb.port, delayMs: opts.rttMs / 2 });
    await wan.start();
    stops.push(() => wan.stop());
    const replica = await startReplica(layout, {
      name: 'west-replica',
      port: layout.mariadb.port + 3,
      serverId: 3,
      masterPort: wan.port,
      extraArgs: ['--slave-net-timeout=10', ...(opts.replicaArgs ?? [])],
      connectRetryS: 1,
    });
    stops.push(() => replica.stop());
    const dir = path.join(layout.dir, 'west-redis');
    const redisLayout: StackLayout = {
      ...layout,
      redis: { ...layout.redis, port: opts.redisPort, dir, confFile: path.join(dir, 'redis.conf'), pidFile: path.join(dir, 'redis.pid'), logFile: path.join(dir, 'redis.log') },
    };
    await startRedis(redisLayout);
    stops.push(() => killRedis(redisLayout));
    return {
      wan,
      replica,
      redisLayout,
      sites: (config, o) => ({
        east: { redis: { ...config.redis, prefix: `${o.prefix}-east` }, datacenters: ['east'] },
        west: {
          redis: { ...config.redis, port: opts.redisPort, prefix: `${o.prefix}-west` },
          source: { host: '127.0.0.1', port: replica.inst.port, fallbackBehind: o.fallbackBehind, primary: { host: '127.0.0.1', port: wan.port } },
          datacenters: ['west'],
        },
      }),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
