/**
 * While a data center's servers change (membership.ts): every op goes to its servers under both
 * the old and the new placement, so whichever a reader uses finds the latest value, and a key
 * copied to its new server is never overtaken by an older one. Servers are those of the old
 * placement, then the new ones.
 *
 * A server may get an op from one placement and, for the same key, a delete from the other's
 * `ejectDeletes` (a key it does not own there): the op itself wins, so one server never gets two
 * ops of one key in one write.
 */
import type { WriteableOp } from '../../fanout/op.js';
import type { Route, WarmPeers } from './route.js';

export class MigrationRoute implements Route {
  readonly name: Route['name'];
  readonly servers: string[];
  /** Index in `servers` of each server of `from`, and of `to`. */
  private readonly fromAt: number[];
  private readonly toAt: number[];

  constructor(
    readonly from: Route,
    readonly to: Route,
  ) {
    this.name = to.name;
    this.servers = [...from.servers];
    for (const s of to.servers) if (!this.servers.includes(s)) this.servers.push(s);
    this.fromAt = from.servers.map((s) => this.servers.indexOf(s));
    this.toAt = to.servers.map((s) => this.servers.indexOf(s));
  }

  assign(ops: readonly WriteableOp[], ejected: ReadonlySet<number>): WriteableOp[][] {
    const own = new Set(ops);
    const out = this.servers.map(() => new Map<string, WriteableOp>());
    const put = (at: number[], lists: WriteableOp[][]) =>
      lists.forEach((list, i) => {
        const m = out[at[i]!]!;
        for (const op of list) {
          const k = op.key.toString('latin1');
          const cur = m.get(k);
          if (!cur || (!own.has(cur) && own.has(op))) m.set(k, op);
        }
      });
    put(this.fromAt, this.from.assign(ops, this.local(ejected, this.fromAt)));
    put(this.toAt, this.to.assign(ops, this.local(ejected, this.toAt)));
    return out.map((m) => [...m.values()]);
  }

  /** The ejected servers, as indices of one placement. */
  private local(ejected: ReadonlySet<number>, at: number[]): Set<number> {
    const out = new Set<number>();
    at.forEach((u, i) => ejected.has(u) && out.add(i));
    return out;
  }

  holds(i: number, key: Buffer): boolean {
    const f = this.fromAt.indexOf(i);
    const t = this.toAt.indexOf(i);
    return (f >= 0 && this.from.holds(f, key)) || (t >= 0 && this.to.holds(t, key));
  }

  holders(key: Buffer): number[] {
    const out = new Set([...this.from.holders(key).map((i) => this.fromAt[i]!), ...this.to.holders(key).map((i) => this.toAt[i]!)]);
    return [...out];
  }

  warmPeers(i: number): WarmPeers {
    const t = this.toAt.indexOf(i);
    const [route, at, j] = t >= 0 ? [this.to, this.toAt, t] : [this.from, this.fromAt, this.fromAt.indexOf(i)];
    const p = route.warmPeers(j);
    return { full: p.full.map((x) => at[x]!), parts: p.parts.map((x) => at[x]!) };
  }
}
