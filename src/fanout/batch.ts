/**
 * A batch: the ops of one or more consecutive committed transactions, split by partition in
 * source order, plus the position after the last of them. The tailer fills one batch while the
 * previous one is being enqueued, so under load batches grow and jobs carry many ops.
 */
import type { Position } from '../source/checkpoint-store.js';
import type { DeadLetter } from './dead-letters.js';
import { encodedSize } from './job-codec.js';
import type { Op } from './op.js';
import { partitionOf } from './partitioner.js';

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
  /** Time the first op was added (ms), for lag accounting. */
  firstOpAt = 0;

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

  /** Marks the end of a transaction. */
  commit(position: Position, txnSeq: number): void {
    this.position = position;
    this.txnSeq = txnSeq;
    this.transactions++;
  }

  get isEmpty(): boolean {
    return this.transactions === 0 && this.deadLetters.length === 0;
  }
}
