/**
 * A batch: the ops of one or more consecutive committed transactions, split by partition in
 * source order, plus the position after the last of them. The tailer fills one batch while the
 * previous one is being enqueued, so under load batches grow and jobs carry many ops.
 */
import type { Position } from '../source/checkpoint-store.js';
import type { DeadLetter } from './dead-letters.js';
import { encodedSize, type JobRef } from './job-codec.js';
import type { Op } from './op.js';
import { partitionOf } from './partitioner.js';

/**
 * A large transaction whose ops were stored in Redis chunk by chunk while it streamed in
 * (FanoutProducer.stage); at its end its jobs are added in order, or its payloads removed.
 */
export interface StagedTxn {
  /** The staged chunks' jobs, in order (filled as each chunk is stored). */
  readonly refs: JobRef[];
  /** Settles once every chunk is stored (rejects if one could not be). */
  ready: Promise<void>;
  /** Rows seen so far. */
  rows: number;
  /** Sequence number before its first op (to start over if the stream breaks mid-transaction). */
  readonly startSeq: number;
  /** No longer wanted (the stream broke in its middle, or Redis restarted): stage nothing more. */
  abandoned?: boolean;
  /** Set at its end: it rolled back (remove the payloads), or was two-phase XA (delete its keys instead). */
  outcome?: 'commit' | 'rollback' | 'xa';
  /** Its dead letters (recorded only if it commits), up to the list's size; the rest counted. */
  readonly deadLetters: DeadLetter[];
  moreDeadLetters: number;
}

export class Batch {
  /** Ops per partition, in source order. */
  readonly ops: Op[][];
  readonly deadLetters: DeadLetter[] = [];
  opCount = 0;
  bytes = 0;
  /** Transactions (of any table) this batch covers. */
  transactions = 0;
  /** Position after the last transaction added; where the checkpoint moves once enqueued. */
  position: Position | undefined;
  /** Sequence number of the last transaction with mcrepl rows in (or before) this batch. */
  txnSeq: number;
  /** Binlog time (unix s) of the last transaction added. */
  commitTimeSec: number | undefined;
  /** Time the first op was added (ms), for lag accounting. */
  firstOpAt = 0;
  /** A batch made of one large transaction staged in Redis: its jobs, instead of `ops`. */
  staged: StagedTxn | undefined;

  constructor(readonly partitions: number, txnSeq: number) {
    this.ops = Array.from({ length: partitions }, () => []);
    this.txnSeq = txnSeq;
  }

  add(op: Op): void {
    if (this.opCount === 0) this.firstOpAt = Date.now();
    if (op.kind === 'flush') {
      // A flush marker must follow the namespace's deletes in every partition.
      for (const list of this.ops) list.push(op);
    } else {
      this.ops[partitionOf(op.key, this.partitions)]!.push(op);
    }
    this.opCount++;
    this.bytes += encodedSize(op);
  }

  /** Marks the end of a transaction (committed at `commitTimeSec`, its binlog event's time). */
  commit(position: Position, txnSeq: number, commitTimeSec?: number): void {
    this.position = position;
    if (commitTimeSec !== undefined) this.commitTimeSec = commitTimeSec;
    this.txnSeq = txnSeq;
    this.transactions++;
  }

  get isEmpty(): boolean {
    return this.transactions === 0 && this.deadLetters.length === 0;
  }
}
