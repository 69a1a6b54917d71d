/**
 * `mcrepl flush <namespace>`: deletes every registered key of a namespace in every data center
 * (CALL flush_namespace), then waits until each data center's workers have applied the flush
 * marker in every partition, showing progress, and says so.
 */
import cliProgress from 'cli-progress';
import type { Redis } from 'ioredis';
import { DEFAULT_SITE, sitesOf, type Site } from '../../config/sites.js';
import { describeRedis, withRedis } from '../../coordination/redis.js';
import { withTimeout } from '../../coordination/timeout.js';
import { errorMessage, McreplError } from '../../errors.js';
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

  // Every site sees the deletes and the marker through its own binlog; each is waited for on
  // its own Redis, side by side, so one that is cut off does not hold up what the others say.
  const sites = sitesOf(ctx.config);
  const deadline = Date.now() + opts.timeout * 1000;
  const started = Date.now();
  const tty = process.stderr.isTTY === true;
  const bars = tty ? new cliProgress.MultiBar({ format: ' {dc} [{bar}] {value}/{total} partitions', hideCursor: true, clearOnComplete: false, stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
  const label = (site: Site, dc: string) => (ctx.config.sites ? `${site.name}/${dc}` : dc);
  let results: SiteWait[];
  try {
    results = await Promise.all(sites.map((site) => waitForSite(site, req, deadline, bars, label)));
  } finally {
    bars?.stop();
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const pending = results.flatMap((r) => Object.entries(r.counts).filter(([, n]) => n < r.partitions).map(([dc, n]) => ({ r, dc, n })));
  const unreachable = results.filter((r) => r.unreachable !== undefined && Object.values(r.counts).some((n) => n < r.partitions));
  if (pending.length === 0) {
    const where = results.flatMap((r) => Object.keys(r.counts).map((dc) => label(r.site, dc)));
    out(`namespace '${ns.nsName}' flushed in every data center (${where.join(', ')}): ${req.keyCount} key${req.keyCount === 1 ? '' : 's'} deleted, ${secs} s`);
    return EXIT.ok;
  }
  for (const r of unreachable) {
    const where = ctx.config.sites ? `site ${r.site.name}: cannot reach its Redis` : 'cannot reach Redis';
    out(`${where} (${r.unreachable}); whether ${Object.keys(r.counts).join(', ')} applied the flush is unknown`);
  }
  for (const { r, dc, n } of pending) {
    if (r.unreachable !== undefined) continue;
    out(`${label(r.site, dc)}: only ${n} of ${r.partitions} partitions have applied the flush after ${opts.timeout} s; is its worker group running? (mcrepl status)`);
  }
  out(`flush #${req.flushId} is still queued and will complete when those data centers catch up`);
  return EXIT.failure;
}

interface SiteWait {
  site: Site;
  partitions: number;
  /** Partitions that applied the flush, per data center of the site. */
  counts: Record<string, number>;
  /** Why its Redis could not be reached, if it could not when last tried. */
  unreachable?: string;
}

/** Waits on one site's Redis for its data centers; an unreachable Redis is tried again until the deadline. */
async function waitForSite(site: Site, req: FlushRequest, deadline: number, bars: cliProgress.MultiBar | undefined, label: (site: Site, dc: string) => string): Promise<SiteWait> {
  const result: SiteWait = { site, partitions: site.config.partitions, counts: Object.fromEntries(Object.keys(site.config.datacenters).map((dc) => [dc, 0])) };
  let warned = false;
  // One bar per data center for the whole wait, across reconnections.
  const made = new Map<string, cliProgress.SingleBar>();
  const barOf = (dc: string, total: number) => {
    if (!bars) return undefined;
    let b = made.get(dc);
    if (!b) made.set(dc, (b = bars.create(total, result.counts[dc] ?? 0, { dc: label(site, dc).padEnd(8) })));
    return b;
  };
  for (;;) {
    try {
      // A Redis cut off (the connection opens, nothing answers) counts as unreachable at the deadline.
      const left = Math.max(1, deadline - Date.now());
      await withTimeout(withRedis(site.config.redis, 'flush', async (redis) => {
        result.unreachable = undefined;
        const keys = new RedisKeys(site.config.redis.prefix);
        const topology = (await readTopology(redis, keys)) ?? { partitions: site.config.partitions, datacenters: Object.keys(site.config.datacenters) };
        result.partitions = topology.partitions;
        await waitForMarkers(redis, keys, req, topology, deadline, result.counts, barOf, (dc) => label(site, dc));
      }), left + 1_000, `no answer from Redis ${describeRedis(site.config.redis)}`);
      return result;
    } catch (err) {
      if (!(err instanceof McreplError && (err.code === 'REDIS_UNAVAILABLE' || err.code === 'TIMEOUT'))) throw err;
      result.unreachable = errorMessage(err);
      if (!warned) process.stderr.write(`${site.name === DEFAULT_SITE ? '' : `site ${site.name}: `}${result.unreachable}; still trying until the timeout\n`);
      warned = true;
      if (Date.now() >= deadline) return result;
      await new Promise((r) => setTimeout(r, Math.min(1_000, Math.max(0, deadline - Date.now()))));
    }
  }
}

async function waitForMarkers(
  redis: Redis,
  keys: RedisKeys,
  req: FlushRequest,
  topology: { partitions: number; datacenters: string[] },
  deadline: number,
  counts: Record<string, number>,
  barOf: (dc: string, total: number) => cliProgress.SingleBar | undefined,
  label: (dc: string) => string,
): Promise<void> {
  const bar = new Map(topology.datacenters.map((dc) => [dc, barOf(dc, topology.partitions)]));
  for (;;) {
    for (const dc of topology.datacenters) {
      const n = await redis.scard(keys.flushDone(req.flushId, req.token, dc));
      if (n !== counts[dc]) {
        counts[dc] = n;
        bar.get(dc)?.update(n);
        if (!bar.get(dc) && n === topology.partitions) process.stderr.write(`${label(dc)}: flush applied\n`);
      }
    }
    if (topology.datacenters.every((dc) => (counts[dc] ?? 0) >= topology.partitions) || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
