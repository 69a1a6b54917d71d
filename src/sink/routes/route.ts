/**
 * Routing inside a data center: which of its servers get which op, and which servers hold which
 * keys (for warming a server back from its peers, and for judging what a server should hold).
 * Servers are numbered as the data center lists them (`serversOf`): the channels' order.
 */
import type { DatacenterConfig } from '../../config/schema.js';
import type { WriteableOp } from '../../fanout/op.js';

/**
 * Where a server's keys can be copied from: `full`, peers that each hold every key it holds;
 * `parts`, peers that together hold them all (each some). Both empty: no other copy exists.
 */
export interface WarmPeers {
  full: number[];
  parts: number[];
}

export interface Route {
  readonly name: DatacenterConfig['routing'];
  /** Every server of the data center, by index. */
  readonly servers: readonly string[];
  /**
   * For each server (by index), the ops it must get, in the given order. `ejected`: servers
   * that are down (or were lately): readers that eject servers read their keys elsewhere.
   */
  assign(ops: readonly WriteableOp[], ejected: ReadonlySet<number>): WriteableOp[][];
  /** Whether server `i` is meant to hold `key`. */
  holds(i: number, key: Buffer): boolean;
  /** The servers meant to hold `key` (by index). */
  holders(key: Buffer): number[];
  /** Where server `i`'s keys can be copied from. */
  warmPeers(i: number): WarmPeers;
}
