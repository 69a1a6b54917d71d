/** `mcrepl status`: checkpoint, who is active, per-data-center backlog, dead letters. */
import { Lease } from '../../coordination/lease.js';
import { connectedTo, withRedis } from '../../coordination/redis.js';
import { DeadLetterStore } from '../../fanout/dead-letters.js';
import { RedisKeys } from '../../fanout/redis-keys.js';
import { datacenterDepth, datacenterMemory, readTopology, type QueueDepth } from '../../fanout/topology.js';
import { serverStateOf } from '../../sink/datacenter-worker.js';
import { RedisCheckpointStore, describePosition, type Checkpoint } from '../../source/checkpoint-store.js';
import type { Context } from '../context.js';

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

export interface StatusReport {
  redis: RedisReport;
  checkpoint: (Checkpoint & { ageMs: number }) | null;
  tailer: string | null;
  partitions: number;
  datacenters: { name: string; worker: string | null; queued: QueueDepth; redisBytes: number; servers: ServerReport[] }[];
  deadLetters: { total: number; recent: unknown[] };
}

export async function collectStatus(ctx: Context): Promise<StatusReport> {
  return withRedis(ctx.config.redis, 'status', async (redis) => {
    const keys = new RedisKeys(ctx.config.redis.prefix);
    const topology = (await readTopology(redis, keys)) ?? { partitions: ctx.config.partitions, datacenters: Object.keys(ctx.config.datacenters) };
    const dcs = [...new Set([...topology.datacenters, ...Object.keys(ctx.config.datacenters)])];
    const cp = await new RedisCheckpointStore(redis, keys).load();
    const dl = new DeadLetterStore(redis, keys, ctx.config.deadLetters.maxEntries);
    const info = `${await redis.info('server')}\n${await redis.info('replication')}`;
    const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(info)?.[1] ?? null;
    return {
      redis: {
        server: connectedTo(redis) ?? null,
        role: field('role'),
        replicas: Number(field('connected_slaves') ?? 0),
        runId: field('run_id'),
        ...(ctx.config.redis.sentinel ? { sentinelName: ctx.config.redis.sentinel.name } : {}),
      },
      checkpoint: cp ? { ...cp, ageMs: Date.now() - cp.savedAt } : null,
      tailer: await Lease.holder(redis, keys.tailerLease),
      partitions: topology.partitions,
      datacenters: await Promise.all(
        dcs.map(async (name) => {
          const states = await redis.hgetall(keys.servers(name));
          const worker = await Lease.holder(redis, keys.workerLease(name));
          const servers: ServerReport[] = await Promise.all(
            (ctx.config.datacenters[name]?.servers ?? Object.keys(states)).map(async (address) => {
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

export async function status(ctx: Context, opts: { json?: boolean }): Promise<number> {
  const r = await collectStatus(ctx);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return 0;
  }
  const lines: string[] = [];
  const cp = r.checkpoint;
  const rd = r.redis;
  const role = rd.role === 'master' ? 'primary' : rd.role === 'slave' ? 'replica' : (rd.role ?? '?');
  const via = rd.sentinelName ? ` of '${rd.sentinelName}' per Sentinel` : '';
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
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
