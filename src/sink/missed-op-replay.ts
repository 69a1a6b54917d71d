/**
 * The ops a server missed while it was down, kept for it (`MissedOpStore`, in Redis), and their
 * replay when it returns:
 *
 * - Ops arriving during the replay join the kept ones (coalesced per key), until what is left
 *   is two replay batches or less: from then on new ops wait for the replay to finish instead
 *   (`catchingUp`, a moment), so a server that returns under a steady stream catches up rather
 *   than chasing it through the store.
 * - The server counts as healthy again (`healthy()`) in the same turn as the check that nothing
 *   is left and no add is under way: a submit after it writes directly, one before it was kept.
 * - An op the server refuses for good is dead-lettered (`onRefused`); a refused set is replaced
 *   by a delete of the key, kept and replayed like any other op.
 */
import { sleep } from '../coordination/lease.js';
import type { WriteableOp } from '../fanout/op.js';
import { toWrite, type MemcachedWriter, type Refusal } from './memcached-writer.js';
import type { MissedEntry, MissedOpStore } from './missed-ops.js';

/** Missed ops replayed per round trip to the store and the server. */
const REPLAY_BATCH = 5_000;
/** Backlog (keys) under which new ops wait for the replay to finish: two batches, ~50-100 ms. */
const CATCH_UP_BELOW = 2 * REPLAY_BATCH;

export interface MissedOpsOptions {
  signal: AbortSignal;
  /** Clock in unix seconds. */
  now: () => number;
  address: string;
  onRefused: (refusals: Refusal[]) => Promise<void>;
  /** The store overflowed its bound and dropped everything kept: the server must be flushed. */
  onOverflow: () => Promise<void>;
}

export class MissedOps {
  /** Adds to the store still in flight (the replay must not declare health under them). */
  private pendingAdds = 0;
  /** Open while the replay finishes a small backlog: submits wait for it rather than keep. */
  private catchUp: { done: Promise<void>; resolve: () => void } | undefined;

  constructor(
    private readonly store: MissedOpStore,
    private readonly opts: MissedOpsOptions,
  ) {}

  count(): Promise<number> {
    return this.store.count();
  }

  /** While the replay finishes a small backlog: resolves when it is done. */
  get catchingUp(): Promise<void> | undefined {
    return this.catchUp?.done;
  }

  /** Keeps ops for the server (newer ones replace older ones of the same key). */
  async keep(ops: readonly WriteableOp[]): Promise<void> {
    this.pendingAdds++;
    try {
      if (!(await this.store.add(ops))) await this.opts.onOverflow();
    } finally {
      this.pendingAdds--;
    }
  }

  /**
   * Writes the kept ops until none are left and no more are on their way, then calls `healthy`
   * in the same turn; false if the server failed again or `stale()` (it must be flushed first).
   */
  async replay(writer: MemcachedWriter, stale: () => boolean, healthy: () => void): Promise<boolean> {
    try {
      return await this.replayUntilEmpty(writer, stale, healthy);
    } finally {
      // Healthy, or failed: the waiting submits go on.
      this.catchUp?.resolve();
      this.catchUp = undefined;
    }
  }

  private async replayUntilEmpty(writer: MemcachedWriter, stale: () => boolean, healthy: () => void): Promise<boolean> {
    for (;;) {
      this.opts.signal.throwIfAborted();
      if (stale()) return false;
      if (!this.catchUp && (await this.store.count()) <= CATCH_UP_BELOW) {
        // Little left: new ops wait for the rest rather than join it (a stream that adds a
        // batch while each batch is replayed would otherwise keep the backlog from emptying).
        let resolve!: () => void;
        const done = new Promise<void>((r) => (resolve = r));
        this.catchUp = { done, resolve };
      }
      const batch = await this.store.take(REPLAY_BATCH);
      if (batch.length === 0) {
        if (this.pendingAdds === 0 && (await this.store.count()) === 0 && this.pendingAdds === 0) {
          healthy();
          return true;
        }
        await sleep(1, this.opts.signal);
        continue;
      }
      const now = this.opts.now();
      const outcomes = await writer.write(batch.map((e) => toWrite(e.op, now)));
      const done: MissedEntry[] = [];
      const refused: Refusal[] = [];
      const again: WriteableOp[] = [];
      let failed = false;
      outcomes.forEach((o, i) => {
        const e = batch[i]!;
        if (o.ok) done.push(e);
        else if (o.retriable) failed = true;
        else {
          done.push(e);
          refused.push({ op: e.op, server: this.opts.address, reason: o.error, keyDeleted: e.op.kind === 'set' });
          if (e.op.kind === 'set') again.push({ kind: 'delete', t: e.op.t, nsId: e.op.nsId, key: e.op.key });
        }
      });
      await this.store.ack(done);
      if (refused.length > 0) await this.opts.onRefused(refused);
      if (again.length > 0) await this.keep(again);
      if (failed) return false;
    }
  }
}
