/**
 * Turns a batch into BullMQ jobs: one job per (data center, partition) that has ops.
 *
 * Each queue's job goes in with its own Queue.add, which reports its own failure (a cross-queue
 * FlowProducer.addBulk would silently drop a per-job error). The queues' commands
 * share one connection, so they are pipelined. If anything fails the whole batch is enqueued
 * again: jobs that made it the first time are then duplicates, which the workers recognise by
 * their ops' transaction numbers and skip.
 *
 * Jobs never use BullMQ's `attempts`: a retried job would go to the back of its queue, behind
 * later ops on the same keys. Workers retry inside the job instead.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Batch } from './batch.js';
import { encodeJob, type JobData } from './job-codec.js';
import type { RedisKeys } from './redis-keys.js';

export const JOB_NAME = 'ops';

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

  /** Enqueues the batch's ops; resolves once Redis has every job, throws if any is missing. */
  async enqueue(epoch: string, batch: Batch): Promise<number> {
    const adds: Promise<unknown>[] = [];
    batch.ops.forEach((ops, partition) => {
      if (ops.length === 0) return;
      const data = encodeJob(epoch, ops);
      for (const dc of this.datacenters) {
        adds.push(this.queue(dc, partition).add(JOB_NAME, data, { attempts: 1, removeOnComplete: true, removeOnFail: 1_000 }));
      }
    });
    const results = await Promise.allSettled(adds);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return adds.length;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
