/**
 * Adaptive job size per data center: a queue that already has a job waiting gets the next ops
 * later, in one bigger job, instead of a small job per batch.
 *
 * A worker group pays about one Redis round trip per job (BullMQ's finish-and-fetch), whatever
 * its size. Next to its Redis that is ~0.1 ms; a zone away, 2 ms; across a continent, 80 ms.
 * The tailer makes a batch every `tailer.lingerMs` under load, so at one job per batch a far
 * data center falls behind without bound. Here, per (data center, partition): while its queue
 * has a job waiting (its worker has not taken the previous one yet), a batch's ops for it are
 * held in the tailer and go out, coalesced, as one job once the queue is empty again, so a far
 * worker takes one job per round trip and each job carries what arrived meanwhile. A data center
 * that keeps up sees no difference (its queue is empty at each batch) and shares its jobs and
 * payloads with every other such data center, as before.
 *
 * What is held is bounded: once a data center's held ops for a partition reach
 * `tailer.batchMaxOps` or `batchMaxBytes`, or have waited `tailer.holdMaxMs` (its workers may be
 * down), they go out anyway, so a data center that is behind costs Redis memory, not tailer
 * memory, and never holds back the checkpoint for longer than that. The checkpoint moves only
 * past batches none of whose ops are held (`oldestHeld`), so a tailer that dies with ops held
 * replays them from the binlog.
 */
import type { Batch } from './batch.js';
import { encodedSize } from './job-codec.js';
import type { Op } from './op.js';

/** Ops to add, in order, to one partition's queue of each of `dcs`. */
export interface PacedJob {
  partition: number;
  dcs: readonly string[];
  ops: Op[];
  /** When the tailer read the oldest of them (ms): the start of their apply lag. */
  readAt?: number;
}

export interface PacerLimits {
  maxOps: number;
  maxBytes: number;
  /** 0: never hold (one job per batch and partition, shared by every data center). */
  maxHoldMs: number;
}

interface Held {
  ops: Op[];
  bytes: number;
  /** When the first of them was held (ms). */
  since: number;
  /** Number of the oldest batch they come from. */
  firstBatch: number;
  /** When the tailer read the oldest of them (ms). */
  readAt: number;
}

/** Jobs waiting in each (data center, partition) queue: `waiting(dc, partition)`. */
export type WaitingCounts = (dc: string, partition: number) => number;

export class Pacer {
  private readonly held = new Map<string, Held>();

  constructor(
    private readonly datacenters: readonly string[],
    private readonly limits: PacerLimits,
  ) {}

  /** Something is held for some data center. */
  get holding(): boolean {
    return this.held.size > 0;
  }

  /** Encoded size of everything held (it counts against the tailer's pending bytes). */
  get heldBytes(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.bytes;
    return n;
  }

  /** The oldest batch with ops held (none: undefined): the checkpoint may not move past it. */
  oldestHeld(): number | undefined {
    let oldest: number | undefined;
    for (const h of this.held.values()) if (oldest === undefined || h.firstBatch < oldest) oldest = h.firstBatch;
    return oldest;
  }

  /**
   * The jobs to add now for batch number `batchNo` (none: only release what may go), in order
   * per queue. With `force`, everything held goes out (before a large transaction's jobs, or at
   * shutdown).
   */
  plan(batch: Batch | undefined, batchNo: number, waiting: WaitingCounts, now: number, force = false): PacedJob[] {
    const jobs: PacedJob[] = [];
    const partitions = batch?.ops.length ?? 0;
    // Held ops of partitions the batch does not touch may go out on their own.
    for (const [slot, h] of [...this.held]) {
      const [dc, p] = parseSlot(slot);
      if (p < partitions && batch!.ops[p]!.length > 0) continue;
      if (force || this.mayRelease(h, waiting(dc, p), now)) {
        this.held.delete(slot);
        jobs.push({ partition: p, dcs: [dc], ops: h.ops, readAt: h.readAt });
      }
    }
    const readAt = batch?.firstOpAt || now;
    for (let p = 0; p < partitions; p++) {
      const ops = batch!.ops[p]!;
      if (ops.length === 0) continue;
      const shared: string[] = [];
      for (const dc of this.datacenters) {
        const slot = slotOf(dc, p);
        const h = this.held.get(slot);
        const queued = waiting(dc, p);
        if (!h && (queued === 0 || this.limits.maxHoldMs === 0 || force)) {
          shared.push(dc);
          continue;
        }
        const next: Held = h ?? { ops: [], bytes: 0, since: now, firstBatch: batchNo, readAt };
        for (const op of ops) {
          next.ops.push(op);
          next.bytes += encodedSize(op);
        }
        if (force || this.mayRelease(next, queued, now)) {
          this.held.delete(slot);
          jobs.push({ partition: p, dcs: [dc], ops: next.ops, readAt: next.readAt });
        } else {
          this.held.set(slot, next);
        }
      }
      if (shared.length > 0) jobs.push({ partition: p, dcs: shared, ops, readAt });
    }
    return jobs;
  }

  /** Forgets what is held (the stream is replayed from the checkpoint, which is before it). */
  clear(): void {
    this.held.clear();
  }

  private mayRelease(h: Held, queued: number, now: number): boolean {
    return queued === 0 || h.ops.length >= this.limits.maxOps || h.bytes >= this.limits.maxBytes || now - h.since >= this.limits.maxHoldMs;
  }
}

const slotOf = (dc: string, partition: number) => `${partition}\u0000${dc}`;
function parseSlot(slot: string): [string, number] {
  const i = slot.indexOf('\u0000');
  return [slot.slice(i + 1), Number(slot.slice(0, i))];
}
