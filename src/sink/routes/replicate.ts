/**
 * `replicate`: every server gets every op. Each server is a full copy, so reads survive a dead
 * server and clients may read any of them (magent-style redundancy, minus its failure modes).
 */
import type { WriteableOp } from '../../fanout/op.js';
import type { Route, WarmPeers } from './route.js';

export class ReplicateRoute implements Route {
  readonly name = 'replicate';

  constructor(readonly servers: readonly string[]) {}

  assign(ops: readonly WriteableOp[]): WriteableOp[][] {
    return this.servers.map(() => ops as WriteableOp[]);
  }

  holds(): boolean {
    return true;
  }

  holders(): number[] {
    return this.servers.map((_, i) => i);
  }

  warmPeers(i: number): WarmPeers {
    return { full: this.servers.flatMap((_, j) => (j === i ? [] : [j])), parts: [] };
  }
}
