/** `mcrepl status`: checkpoint, who is active, per-data-center backlog, dead letters. */
import { Lease } from '../../coordination/lease.js';
import { connectedTo, describeRedis, withRedis } from '../../coordination/redis.js';
import { withTimeout } from '../../coordination/timeout.js';
import { DeadLetterStore } from '../../fanout/dead-letters.js';
import { RedisKeys } from '../../fanout/redis-keys.js';
import { datacenterDepth, datacenterMemory, readTopology, type QueueDepth } from '../../fanout/topology.js';
import { serverStateOf } from '../../sink/datacenter-worker.js';
import { RedisCheckpointStore, describePosition, type Checkpoint, type Position } from '../../source/checkpoint-store.js';
import { sitesOf, type Site } from '../../config/sites.js';
import { serversOf, type DatacenterConfig } from '../../config/schema.js';
import type { MigrationProgress } from '../../sink/membership.js';
import { errorMessage, McreplError } from '../../errors.js';
import { connectMysql } from '../../registry/mysql.js';
import { mysqlFor } from '../../registry/accounts.js';
import { currentBinlogPosition } from '../../source/position.js';
import { transactionsBehind } from '../../source/source-lag.js';
import { EXIT, type Context } from '../context.js';

export interface ServerReport {
  address: string;
  /**
   * As the data center's running worker group sees it; `unknown` while no worker group runs
   * (what was recorded then may no longer be true) or before one first ran.
   */
  health: string;
  /** What the last worker group recorded, when none is running now. */
  lastRecorded?: string;
  mustFlush: boolean;
  /** False: it lost keys (restarted or flushed) and was not yet warmed from a peer that holds them all. */
  complete: boolean;
  since?: string;
  /** Ops kept for it while it is down, and the Redis memory they take. */
  missedOps: number;
  missedBytes: number;
}

export interface RedisReport {
  /** The server answering, `host:port` (with Sentinel: the primary the sentinels named). */
  server: string | null;
  /** Its replication role (`master`, or `slave` for a replica), and how many replicas it has. */
  role: string | null;
  replicas: number;
  runId: string | null;
  /** The master group name, when found through Sentinel. */
  sentinelName?: string;
}

/** Where a site's tailer reads the binlog, and how far its checkpoint is behind the primary. */
export interface SourceReport {
  /** `host:port` of the site's configured source (the primary, or a replica). */
  server: string;
  /**
   * `host:port` of the server the tailer was reading at its last checkpoint: the source, or the
   * primary while a replica source is far behind (docs/decisions/0024). Null: no checkpoint.
   */
  reading: string | null;
  /** Transactions the primary has that the checkpoint does not (GTIDs only; null: unknown). */
  transactionsBehind: number | null;
  /** Age of the newest transaction the checkpoint covers, while behind (0 when not; null: unknown). */
  secondsBehind: number | null;
}

export interface StatusReport {
  source: SourceReport;
  redis: RedisReport;
  checkpoint: (Checkpoint & { ageMs: number }) | null;
  tailer: string | null;
  partitions: number;
  datacenters: { name: string; worker: string | null; queued: QueueDepth; redisBytes: number; servers: ServerReport[]; /** The last change of its servers (ketama membership), if any. */ migration: MigrationProgress | null }[];
  deadLetters: { total: number; recent: unknown[] };
}

/** How long a site's Redis may stay silent: more than a Sentinel failover takes (commands wait up to 30 s for one). */
const statusTimeoutMs = (site: Site) => (site.config.redis.sentinel ? 35_000 : 10_000);

/** A site's report, or why its Redis could not be read. */
export type SiteStatus = { site: string } & (StatusReport | { error: string });

/** Every site's status (a config without `sites`: one, named `default`). */
export async function collectSites(ctx: Context): Promise<SiteStatus[]> {
  // Asked beside the Redis reads: a MySQL that does not answer only leaves "behind" unknown.
  const primary = primaryPosition(ctx).catch(() => null);
  return Promise.all(
    sitesOf(ctx.config).map(async (site) => {
      try {
        // A Redis cut off (the connection opens, nothing answers) is reported, not waited for.
        const ms = statusTimeoutMs(site);
        return { site: site.name, ...(await withTimeout(collectStatus(site, primary), ms, `no answer from Redis ${describeRedis(site.config.redis)} in ${ms / 1000} s`)) };
      } catch (err) {
        return { site: site.name, error: errorMessage(err) };
      }
    }),
  );
}

/** Where the primary's binlog ends now (null when it cannot be asked). */
async function primaryPosition(ctx: Context): Promise<Position | null> {
  const conn = await connectMysql(mysqlFor(ctx.config.mysql, 'admin'));
  try {
    return await currentBinlogPosition(conn);
  } finally {
    await conn.end();
  }
}

function sourceReport(site: Site, cp: Checkpoint | null, primary: Position | null): SourceReport {
  const behind = cp && primary ? transactionsBehind(primary, cp.position) : null;
  const age = cp?.sourceTimeSec !== undefined ? Math.max(0, Date.now() / 1000 - cp.sourceTimeSec) : null;
  const server = `${site.source.host}:${site.source.port}`;
  return { server, reading: cp ? (cp.source ?? server) : null, transactionsBehind: behind, secondsBehind: behind === null ? null : behind === 0 ? 0 : age };
}

export async function collectStatus(site: Site, primary: Promise<Position | null>): Promise<StatusReport> {
  const config = site.config;
  return withRedis(config.redis, 'status', async (redis) => {
    const keys = new RedisKeys(config.redis.prefix);
    const topology = (await readTopology(redis, keys)) ?? { partitions: config.partitions, datacenters: Object.keys(config.datacenters) };
    const dcs = [...new Set([...topology.datacenters, ...Object.keys(config.datacenters)])];
    const cp = await new RedisCheckpointStore(redis, keys).load();
    const dl = new DeadLetterStore(redis, keys, config.deadLetters.maxEntries);
    const info = `${await redis.info('server')}\n${await redis.info('replication')}`;
    const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(info)?.[1] ?? null;
    return {
      source: sourceReport(site, cp, await primary),
      redis: {
        server: connectedTo(redis) ?? null,
        role: field('role'),
        replicas: Number(field('connected_slaves') ?? 0),
        runId: field('run_id'),
        ...(config.redis.sentinel ? { sentinelName: config.redis.sentinel.name } : {}),
      },
      checkpoint: cp ? { ...cp, ageMs: Date.now() - cp.savedAt } : null,
      tailer: await Lease.holder(redis, keys.tailerLease),
      partitions: topology.partitions,
      datacenters: await Promise.all(
        dcs.map(async (name) => {
          const states = await redis.hgetall(keys.servers(name));
          const worker = await Lease.holder(redis, keys.workerLease(name));
          // The servers its keys are placed on (which a change of servers may have made other
          // than the config's), and during a change those it moves them between.
          const [placed, moving] = await Promise.all([redis.get(keys.ring(name)), redis.get(keys.migration(name))]);
          const migration = moving ? (JSON.parse(moving) as MigrationProgress) : null;
          const dcConfig = placed ? (JSON.parse(placed) as DatacenterConfig) : config.datacenters[name];
          const addresses = new Set(dcConfig ? serversOf(dcConfig) : Object.keys(states));
          if (migration && migration.phase !== 'done') for (const a of [...migration.from, ...migration.to]) addresses.add(a);
          const servers: ServerReport[] = await Promise.all(
            [...addresses].map(async (address) => {
              const st = serverStateOf(states[address]);
              const missedKey = keys.missed(name, address);
              return {
                address,
                health: (worker && st?.health) || 'unknown',
                ...(!worker && st?.health ? { lastRecorded: st.health } : {}),
                mustFlush: st?.mustFlush ?? false,
                complete: st?.complete ?? true,
                ...(st?.since ? { since: st.since } : {}),
                missedOps: await redis.hlen(missedKey),
                missedBytes: Number((await redis.call('MEMORY', 'USAGE', missedKey)) ?? 0),
              };
            }),
          );
          return {
            name,
            worker,
            queued: await datacenterDepth(redis, keys, name, topology.partitions),
            redisBytes: (await datacenterMemory(redis, keys, name, topology.partitions)) + servers.reduce((n, sv) => n + sv.missedBytes, 0),
            servers,
            migration,
          };
        }),
      ),
      deadLetters: { total: await dl.count(), recent: await dl.recent(5) },
    };
  });
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** What `mcrepl status --json` prints: the one site's report, or with `sites`, one per site. */
export async function statusJson(ctx: Context): Promise<unknown> {
  const sites = await collectSites(ctx);
  return ctx.config.sites ? { sites } : sites[0];
}

export async function status(ctx: Context, opts: { json?: boolean }): Promise<number> {
  const sites = await collectSites(ctx);
  if (opts.json) {
    // Without `sites`, the one site's report as it always was; with them, one per site.
    const json = ctx.config.sites ? { sites } : sites[0];
    if (!ctx.config.sites && 'error' in sites[0]!) throw new McreplError('REDIS_UNAVAILABLE', sites[0].error, { retriable: true });
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    return sites.some((s) => 'error' in s) ? EXIT.failure : EXIT.ok;
  }
  const lines: string[] = [];
  for (const s of sites) {
    if (ctx.config.sites) lines.push(`site ${s.site}`, '');
    if ('error' in s) {
      if (!ctx.config.sites) throw new McreplError('REDIS_UNAVAILABLE', s.error, { retriable: true });
      lines.push(`  cannot reach its Redis: ${s.error}`, '');
      continue;
    }
    lines.push(...formatReport(s), '');
  }
  process.stdout.write(`${lines.join('\n').trimEnd()}\n`);
  return sites.some((s) => 'error' in s) ? EXIT.failure : EXIT.ok;
}

function formatReport(r: StatusReport): string[] {
  const lines: string[] = [];
  const cp = r.checkpoint;
  const rd = r.redis;
  const role = rd.role === 'master' ? 'primary' : rd.role === 'slave' ? 'replica' : (rd.role ?? '?');
  const via = rd.sentinelName ? ` of '${rd.sentinelName}' per Sentinel` : '';
  const src = r.source;
  const behind = !cp ? 'no checkpoint yet' : src.transactionsBehind === null ? 'how far behind the primary is unknown (no GTIDs, or the primary did not answer)' : src.transactionsBehind === 0 ? 'up to date with the primary' : `${src.transactionsBehind} transaction${src.transactionsBehind === 1 ? '' : 's'} behind the primary${src.secondsBehind !== null ? ` (${src.secondsBehind.toFixed(1)} s)` : ''}`;
  const reading = src.reading && src.reading !== src.server ? ` (reading the primary ${src.reading} while it is far behind)` : '';
  lines.push(`source        ${src.server}${reading}, ${behind}`);
  lines.push(`redis         ${rd.server ?? '?'} (${role}${via}, ${rd.replicas} replica${rd.replicas === 1 ? '' : 's'}, run_id ${rd.runId?.slice(0, 12) ?? '?'})`);
  lines.push(`checkpoint    ${cp ? `${describePosition(cp.position)}, op #${cp.txnSeq}, saved ${(cp.ageMs / 1000).toFixed(1)} s ago` : 'none (the tailer has not run yet)'}`);
  lines.push(`tailer        ${r.tailer ? `active: ${r.tailer}` : 'none holds the lease (not running)'}`);
  lines.push(`partitions    ${r.partitions}`);
  lines.push('');
  lines.push(`${'data center'.padEnd(14)}${'queued'.padStart(8)}${'active'.padStart(8)}${'failed'.padStart(8)}${'redis'.padStart(11)}  worker group`);
  for (const d of r.datacenters) {
    lines.push(
      `${d.name.padEnd(14)}${String(d.queued.waiting + d.queued.delayed).padStart(8)}${String(d.queued.active).padStart(8)}${String(d.queued.failed).padStart(8)}${formatBytes(d.redisBytes).padStart(11)}  ${d.worker ?? 'not running'}`,
    );
    const m = d.migration;
    if (m && m.phase !== 'done') {
      lines.push(`  servers changing (${m.phase}, since ${m.startedAt}): ${m.scanned} keys listed, ${m.copied} copied to their new servers, ${m.deleted} deleted where they no longer belong`);
      lines.push(`    from ${m.from.join(', ')}`);
      lines.push(`    to   ${m.to.join(', ')}${m.error ? ` (${m.error})` : ''}`);
    }
    for (const sv of d.servers) {
      const extra = [
        sv.lastRecorded ? `last recorded ${sv.lastRecorded}` : '',
        sv.health !== 'healthy' && sv.since ? `since ${sv.since}` : '',
        sv.missedOps ? `${sv.missedOps} missed ops kept (${formatBytes(sv.missedBytes)})` : '',
        sv.mustFlush ? 'will be flushed before use' : '',
        sv.complete ? '' : 'missing keys (it restarted or was flushed, and no peer holding them all has been healthy since)',
      ].filter(Boolean);
      lines.push(`  ${sv.address.padEnd(24)}${sv.health}${extra.length ? `, ${extra.join(', ')}` : ''}`);
    }
  }
  lines.push('');
  lines.push(`dead letters  ${r.deadLetters.total}${r.deadLetters.total ? ' (latest first):' : ''}`);
  for (const e of r.deadLetters.recent as { at: string; stage: string; dc?: string; reason: string; op: Record<string, unknown> }[]) {
    lines.push(`  ${e.at}  ${e.stage}${e.dc ? `/${e.dc}` : ''}  ${e.reason}  ${JSON.stringify(e.op)}`);
  }
  return lines;
}
