/**
 * `mcrepl flush <namespace>`: deletes every registered key of a namespace in every data center
 * (CALL flush_namespace), then waits until each data center's workers have applied the flush
 * marker in every partition, showing progress, and says so.
 */
import cliProgress from 'cli-progress';
import type { Redis } from 'ioredis';
import { withRedis } from '../../coordination/redis.js';
import { RedisKeys } from '../../fanout/redis-keys.js';
import { readTopology } from '../../fanout/topology.js';
import { connectMysql } from '../../registry/mysql.js';
import { mysqlFor } from '../../registry/accounts.js';
import { requestFlush, resolveNamespace, type FlushRequest } from '../../registry/namespaces.js';
import { EXIT, type Context } from '../context.js';

export interface FlushOptions {
  wait: boolean;
  timeout: number;
}

export async function flush(ctx: Context, namespace: string, opts: FlushOptions): Promise<number> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  const conn = await connectMysql(mysqlFor(ctx.config.mysql, 'admin'));
  let ns;
  let req;
  try {
    ns = await resolveNamespace(conn, namespace);
    req = await requestFlush(conn, ns.nsId);
  } finally {
    await conn.end();
  }
  out(`flush #${req.flushId} of namespace '${ns.nsName}' (ns_id ${ns.nsId}): ${req.keyCount} key${req.keyCount === 1 ? '' : 's'} to delete`);
  if (!opts.wait) {
    out('not waiting (--no-wait); follow it with `mcrepl status`');
    return EXIT.ok;
  }

  return withRedis(ctx.config.redis, 'flush', async (redis) => {
    const keys = new RedisKeys(ctx.config.redis.prefix);
    const topology = (await readTopology(redis, keys)) ?? { partitions: ctx.config.partitions, datacenters: Object.keys(ctx.config.datacenters) };
    const started = Date.now();
    const done = await waitForMarkers(redis, keys, req, topology, opts.timeout * 1000);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    const pending = Object.entries(done).filter(([, n]) => n < topology.partitions);
    if (pending.length === 0) {
      out(`namespace '${ns.nsName}' flushed in every data center (${topology.datacenters.join(', ')}): ${req.keyCount} key${req.keyCount === 1 ? '' : 's'} deleted, ${secs} s`);
      return EXIT.ok;
    }
    for (const [dc, n] of pending) {
      out(`${dc}: only ${n} of ${topology.partitions} partitions have applied the flush after ${opts.timeout} s; is its worker group running? (mcrepl status)`);
    }
    out(`flush #${req.flushId} is still queued and will complete when those data centers catch up`);
    return EXIT.failure;
  });
}

async function waitForMarkers(
  redis: Redis,
  keys: RedisKeys,
  req: FlushRequest,
  topology: { partitions: number; datacenters: string[] },
  timeoutMs: number,
): Promise<Record<string, number>> {
  const deadline = Date.now() + timeoutMs;
  const tty = process.stderr.isTTY === true;
  const bars = tty ? new cliProgress.MultiBar({ format: ' {dc} [{bar}] {value}/{total} partitions', hideCursor: true, clearOnComplete: false, stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
  const bar = new Map(topology.datacenters.map((dc) => [dc, bars?.create(topology.partitions, 0, { dc: dc.padEnd(8) })]));
  const counts: Record<string, number> = Object.fromEntries(topology.datacenters.map((dc) => [dc, 0]));
  try {
    for (;;) {
      for (const dc of topology.datacenters) {
        const n = await redis.scard(keys.flushDone(req.flushId, req.token, dc));
        if (n !== counts[dc]) {
          counts[dc] = n;
          bar.get(dc)?.update(n);
          if (!tty && n === topology.partitions) process.stderr.write(`${dc}: flush applied\n`);
        }
      }
      if (Object.values(counts).every((n) => n >= topology.partitions) || Date.now() > deadline) return counts;
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    bars?.stop();
  }
}
