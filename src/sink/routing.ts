/**
 * Routing inside a data center: which of its servers get which op.
 *
 * `replicate`: every server gets every op. Each server is a full copy, so reads survive a dead
 * server and clients may read any of them (magent-style redundancy, minus its failure modes).
 */
export interface Route {
  readonly name: string;
  /** For each server (by index), the ops it must get, in the given order. */
  assign<T>(ops: readonly T[], keyOf: (op: T) => Buffer): T[][];
}

export class ReplicateRoute implements Route {
  readonly name = 'replicate';

  constructor(private readonly serverCount: number) {}

  assign<T>(ops: readonly T[]): T[][] {
    return Array.from({ length: this.serverCount }, () => ops as T[]);
  }
}

export function createRoute(kind: 'replicate', serverCount: number): Route {
  switch (kind) {
    case 'replicate':
      return new ReplicateRoute(serverCount);
  }
}
