/**
 * The topology the tailer fans out to (partition count and data centers), recorded in Redis so
 * workers, `mcrepl flush` and `mcrepl status` agree with it, and queue inspection helpers.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { McreplError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { RedisKeys } from './redis-keys.js';

export interface Topology {
  partitions: number;
  datacenters: string[];
}

export interface QueueDepth {
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
}

export async function readTopology(redis: Redis, keys: RedisKeys): Promise<Topology | null> {
  const raw = await redis.get(keys.topology);
  return raw ? (JSON.parse(raw) as Topology) : null;
}

export async function queueDepth(redis: Redis, keys: RedisKeys, dc: string, partition: number): Promise<QueueDepth> {
  const q = new Queue(keys.queueName(dc, partition), { connection: redis, prefix: keys.prefix });
  try {
    const c = await q.getJobCounts('wait', 'prioritized', 'active', 'delayed', 'failed');
    return { waiting: (c.wait ?? 0) + (c.prioritized ?? 0), active: c.active ?? 0, delayed: c.delayed ?? 0, failed: c.failed ?? 0 };
  } finally {
    await q.close();
  }
}

export async function datacenterDepth(redis: Redis, keys: RedisKeys, dc: string, partitions: number): Promise<QueueDepth> {
  const all = await Promise.all(Array.from({ length: partitions }, (_, p) => queueDepth(redis, keys, dc, p)));
  return all.reduce((a, b) => ({ waiting: a.waiting + b.waiting, active: a.active + b.active, delayed: a.delayed + b.delayed, failed: a.failed + b.failed }), {
    waiting: 0,
    active: 0,
    delayed: 0,
    failed: 0,
  });
}

/**
 * Redis memory a data center's backlog holds, estimated: the size of a sample of its waiting
 * jobs times their number, per partition (exact sizes would mean reading every job).
 */
export async function datacenterMemory(redis: Redis, keys: RedisKeys, dc: string, partitions: number): Promise<number> {
  let total = 0;
  for (let p = 0; p < partitions; p++) {
    const waiting = await redis.llen(keys.queueKey(dc, p, 'wait'));
    if (waiting === 0) continue;
    const ids = await redis.lrange(keys.queueKey(dc, p, 'wait'), 0, 9);
    const sizes = await Promise.all(ids.map(async (id) => Number((await redis.call('MEMORY', 'USAGE', keys.queueKey(dc, p, id))) ?? 0)));
    const avg = sizes.length ? sizes.reduce((a, b) => a + b, 0) / sizes.length : 0;
    total += avg * waiting;
  }
  return Math.round(total);
}

/**
 * Records the tailer's topology. Changing the partition count while ops are queued would let a
 * key's old and new queues race, so it is refused unless every queue is empty.
 */
export async function recordTopology(redis: Redis, keys: RedisKeys, wanted: Topology, logger: Logger): Promise<void> {
  const old = await readTopology(redis, keys);
  if (old && old.partitions !== wanted.partitions) {
    for (const dc of old.datacenters) {
      const d = await datacenterDepth(redis, keys, dc, old.partitions);
      if (d.waiting + d.active + d.delayed > 0) {
        throw new McreplError(
          'TOPOLOGY_CHANGE_WHILE_QUEUED',
          `partitions changed from ${old.partitions} to ${wanted.partitions} while data center ${dc} still has ${d.waiting + d.active + d.delayed} jobs queued; ` +
            `keep partitions=${old.partitions} until every queue is empty (see \`mcrepl status\`), then change it`,
        );
      }
    }
  }
  if (old) {
    for (const dc of wanted.datacenters.filter((d) => !old.datacenters.includes(d))) {
      logger.warn({ dc }, 'new data center: it receives changes from now on, not the keys written before');
    }
    for (const dc of old.datacenters.filter((d) => !wanted.datacenters.includes(d))) {
      logger.warn({ dc }, 'data center removed from the config: its queues are no longer fed');
    }
  }
  await redis.set(keys.topology, JSON.stringify(wanted));
}
