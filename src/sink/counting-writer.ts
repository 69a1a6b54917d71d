/** A MemcachedWriter that counts the ops each server takes (mcrepl_ops_applied_total). */
import { opsApplied } from '../observability/metrics.js';
import type { MemcachedWriter, ServerIdentity, WriteOp, WriteOutcome } from './memcached-writer.js';

export class CountingWriter implements MemcachedWriter {
  private readonly sets: { inc(n: number): void };
  private readonly deletes: { inc(n: number): void };
  readonly drained?: () => Promise<boolean>;
  readonly forgetUnconfirmed?: () => void;

  constructor(
    private readonly inner: MemcachedWriter,
    dc: string,
  ) {
    this.sets = opsApplied.labels({ dc, server: inner.address, op: 'set' });
    this.deletes = opsApplied.labels({ dc, server: inner.address, op: 'delete' });
    if (inner.drained) this.drained = () => inner.drained!();
    if (inner.forgetUnconfirmed) this.forgetUnconfirmed = () => inner.forgetUnconfirmed!();
  }

  get address(): string {
    return this.inner.address;
  }

  async write(ops: readonly WriteOp[]): Promise<WriteOutcome[]> {
    const outcomes = await this.inner.write(ops);
    let s = 0;
    let d = 0;
    outcomes.forEach((o, i) => {
      if (!o.ok) return;
      if (ops[i]!.kind === 'set') s++;
      else d++;
    });
    if (s) this.sets.inc(s);
    if (d) this.deletes.inc(d);
    return outcomes;
  }

  identity(): Promise<ServerIdentity> {
    return this.inner.identity();
  }

  flushAll(): Promise<void> {
    return this.inner.flushAll();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
