/**
 * Turns a batch into BullMQ jobs: one job per (data center, partition) that has ops.
 *
 * A partition's ops are coalesced (the last op per key: see `coalesce`), which the job says
 * (`c`, so the workers do not coalesce again), and packed once. A few
 * ops (up to INLINE_MAX_BYTES) travel inside each data center's job; more are stored, as raw
 * bytes, in a payload hash that every data center's job refers to (RedisKeys.payload); the hash also holds one field per data center,
 * which that data center's worker removes when it has applied the job (the last one deletes the
 * hash). All payloads of a batch are stored before any job that refers to them is added.
 *
 * Each queue's job goes in with its own Queue.add, which reports its own failure (a cross-queue
 * FlowProducer.addBulk would silently drop a per-job error). The queues' commands
 * share one connection, so they are pipelined. If anything fails the whole batch is enqueued
 * again: the payloads are rewritten under the same ids, and jobs that made it the first time are
 * then duplicates, which the workers recognise by their ops' sequence numbers and skip.
 * (A tailer that dies between writing payloads and adding their jobs leaves those payloads
 * behind; the next tailer removes them at start, see `sweepPayloads`.)
 *
 * A large transaction is stored chunk by chunk as it streams in (`stage`: payloads only) and its
 * jobs are added at its end (`add`), or its payloads removed if it rolled back (`discard`):
 * decision 0019.
 *
 * Jobs never use BullMQ's `attempts`: a retried job would go to the back of its queue, behind
 * later ops on the same keys. Workers retry inside the job instead.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Batch } from './batch.js';
import { coalesce } from './op.js';
import { encodeJob, encodeJobRef, encodeOps, parsePayloadId, payloadId, type JobData, type JobRef } from './job-codec.js';
import type { PacedJob, WaitingCounts } from './pacer.js';
import type { RedisKeys } from './redis-keys.js';

export const JOB_NAME = 'ops';

/**
 * A partition's ops up to this size travel inside the job (format 1): with live traffic a job
 * holds a few ops, and a payload of its own would cost a round trip on each side.
 */
export const INLINE_MAX_BYTES = 8 * 1024;

/**
 * A job for one data center only (the pacer held its ops: its worker is busy or far away)
 * shares no payload, and a payload would cost its worker one more round trip: inline up to this.
 */
export const SOLO_INLINE_MAX_BYTES = 64 * 1024;

export class FanoutProducer {
  private readonly queues = new Map<string, Queue<JobData>>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly datacenters: readonly string[],
  ) {}

  private queue(dc: string, partition: number): Queue<JobData> {
    const name = this.keys.queueName(dc, partition);
    let q = this.queues.get(name);
    if (!q) {
      // A short event stream: nothing reads it, and each queue's would otherwise hold 10,000.
      q = new Queue<JobData>(name, { connection: this.redis, prefix: this.keys.prefix, streams: { events: { maxLen: 100 } } });
      // Failures reach the caller through add(); the event would otherwise be unhandled.
      q.on('error', () => undefined);
      this.queues.set(name, q);
    }
    return q;
  }

  /**
   * Enqueues ops planned by the Pacer (each for some data centers); resolves once Redis has
   * every job, throws if any is missing. Retrying it with the same jobs is safe (see above).
   */
  async enqueue(epoch: string, planned: readonly PacedJob[]): Promise<number> {
    const { jobs, stored } = this.pack(epoch, planned, false);
    if (jobs.length === 0) return 0;
    await Promise.all(stored);
    return this.add(jobs);
  }

  /**
   * Jobs waiting (not yet taken by a worker) in each partition's queue of each data center,
   * read in one pipelined round trip.
   */
  async waitingCounts(partitions: number): Promise<WaitingCounts> {
    const pipeline = this.redis.pipeline();
    for (const dc of this.datacenters) for (let p = 0; p < partitions; p++) pipeline.llen(this.keys.queueKey(dc, p, 'wait'));
    const replies = (await pipeline.exec()) ?? [];
    const counts = new Map<string, number>();
    let i = 0;
    for (const dc of this.datacenters) {
      for (let p = 0; p < partitions; p++) {
        const [err, n] = replies[i++] ?? [new Error('no reply')];
        if (err) throw err;
        counts.set(`${p}:${dc}`, Number(n));
      }
    }
    return (dc, p) => counts.get(`${p}:${dc}`) ?? 0;
  }

  /**
   * Stores a chunk of a large transaction that is still streaming in: its ops go to payloads
   * only, and the jobs that refer to them are returned, to be added (`add`) once the
   * transaction's end says it committed, or the payloads removed (`discard`) if it rolled back.
   * Nothing of it is visible to a worker before then.
   */
  async stage(epoch: string, batch: Batch): Promise<JobRef[]> {
    const planned = batch.ops.map((ops, partition) => ({ partition, dcs: this.datacenters, ops }));
    const { jobs, stored } = this.pack(epoch, planned, true);
    await Promise.all(stored);
    return jobs;
  }

  /**
   * Adds jobs (in order) to every data center's queue, pipelined; `extra` is merged into each
   * job's data. Resolves once Redis has every job, throws if any is missing.
   */
  async add(jobs: readonly JobRef[], extra: Partial<JobData> = {}): Promise<number> {
    const adds: Promise<unknown>[] = [];
    for (const { partition, data, dcs } of jobs) {
      for (const dc of dcs ?? this.datacenters) {
        adds.push(this.queue(dc, partition).add(JOB_NAME, { ...data, ...extra }, { attempts: 1, removeOnComplete: true, removeOnFail: 1_000 }));
      }
    }
    const results = await Promise.allSettled(adds);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return adds.length;
  }

  /** Removes the payloads of staged jobs that will never be added (their transaction rolled back). */
  async discard(jobs: readonly JobRef[]): Promise<void> {
    const keys = jobs.flatMap((j) => (j.data.p ? [this.keys.payload(j.data.p)] : []));
    if (keys.length > 0) await this.redis.del(...keys);
  }

  /**
   * One job per planned run of ops: inline when small (live traffic) unless `payloadsOnly`,
   * else a reference to a payload, whose write is returned in `stored`. The payload waits for
   * the job's data centers only. Two runs with the same first and last op have the same ops
   * (coalesced from the same batches), so a payload id written twice holds the same bytes.
   */
  private pack(epoch: string, planned: readonly PacedJob[], payloadsOnly: boolean): { jobs: JobRef[]; stored: Promise<unknown>[] } {
    const jobs: JobRef[] = [];
    const stored: Promise<unknown>[] = [];
    for (const { partition, dcs, ops: all, readAt } of planned) {
      if (all.length === 0 || dcs.length === 0) continue;
      const ops = coalesce(all);
      const packed = encodeOps(ops);
      const only = dcs.length === this.datacenters.length ? {} : { dcs };
      if (!payloadsOnly && packed.length <= (dcs.length === 1 ? SOLO_INLINE_MAX_BYTES : INLINE_MAX_BYTES)) {
        // Small (live traffic): inline, which saves a round trip on each side.
        jobs.push({ partition, data: { ...encodeJob(epoch, ops, packed), c: 1, ...(readAt ? { ts: readAt } : {}) }, ...only });
        continue;
      }
      const id = payloadId(epoch, partition, ops);
      // Pipelined on the connection; no MULTI, which would copy every payload once more.
      stored.push(this.redis.hset(this.keys.payload(id), 'd', packed, ...dcs.flatMap((dc) => [dc, '1'])));
      jobs.push({ partition, data: { ...encodeJobRef(epoch, id, ops), c: 1, ...(readAt ? { ts: readAt } : {}) }, ...only });
    }
    return { jobs, stored };
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}

/**
 * Removes payloads no job needs any more: those of the current stream whose ops every data
 * center it names has applied (its watermark for the partition is at or past the payload's last
 * op), which is what a tailer that died between writing payloads and adding their jobs leaves.
 * A job that still refers to such a payload is skipped unread (all its ops are below the
 * watermark). Returns how many were removed.
 */
export async function sweepPayloads(redis: Redis, keys: RedisKeys, epoch: string): Promise<number> {
  const watermark = new Map<string, Map<number, number>>();
  const appliedOf = async (dc: string) => {
    let w = watermark.get(dc);
    if (!w) {
      w = new Map();
      for (const [p, v] of Object.entries(await redis.hgetall(keys.applied(dc)))) {
        const i = v.lastIndexOf(':');
        if (v.slice(0, i) === epoch) w.set(Number(p), Number(v.slice(i + 1)));
      }
      watermark.set(dc, w);
    }
    return w;
  };
  let removed = 0;
  let cursor = '0';
  const prefix = keys.payload('');
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', keys.payloadPattern, 'COUNT', 500);
    cursor = next;
    for (const key of found) {
      const id = parsePayloadId(key.slice(prefix.length));
      if (!id || id.epoch !== epoch) continue;
      const waiting = (await redis.hkeys(key)).filter((f) => f !== 'd');
      let needed = false;
      for (const dc of waiting) if (((await appliedOf(dc)).get(id.partition) ?? -1) < id.lastT) needed = true;
      if (!needed) {
        await redis.del(key);
        removed++;
      }
    }
  } while (cursor !== '0');
  return removed;
}
