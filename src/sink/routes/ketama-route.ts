/**
 * `ketama`: each key on the server of a ketama ring where the readers' client looks for it, and
 * on the next `replicas - 1` distinct servers of the ring (memcloud's pairs); `backup` servers
 * get every key (magent's `-b`).
 *
 * Readers that eject a server (twemproxy `auto_eject_hosts`, libmemcached's
 * REMOVE_FAILED_SERVERS) rebuild their ring without it and read, and fill, its keys on another
 * server. While servers are `ejected`, each op also sends a delete of its key to the server
 * such a reader reads it from, when that server is not one of the key's own: what the reader
 * filled there before the write is gone, and the next read fills the new value. (With unequal
 * weights a rebuilt ring moves some keys of the live servers too; those are covered alike.)
 */
import { ringOf, serversOf, type DatacenterConfig } from '../../config/schema.js';
import type { RingServer } from '../../config/ring-server.js';
import type { WriteableOp } from '../../fanout/op.js';
import { KetamaRing } from './ketama-ring.js';
import type { Route, WarmPeers } from './route.js';

type KetamaDatacenter = Extract<DatacenterConfig, { routing: 'ketama' }>;

/** A ring of some of the servers, answering with the data center's server indices. */
interface PartialRing {
  ring: KetamaRing;
  index: number[];
}

export class KetamaRoute implements Route {
  readonly name = 'ketama';
  readonly servers: readonly string[];
  readonly ring: KetamaRing;
  private readonly ringSize: number;
  private readonly backups: number[];
  /** The rings readers rebuild without the ejected servers, by the ejected set. */
  private readonly readerRings = new Map<string, PartialRing | undefined>();

  private readonly members: RingServer[];

  constructor(private readonly dc: KetamaDatacenter) {
    this.members = ringOf(dc);
    this.ring = new KetamaRing(this.members, dc.hash);
    this.ringSize = this.members.length;
    this.servers = serversOf(dc);
    this.backups = dc.backup.map((_, i) => this.ringSize + i);
  }

  /** The key's servers in the ring: its own first, then its replicas. */
  owners(key: Buffer): number[] {
    return this.ring.owners(key, this.dc.replicas);
  }

  assign(ops: readonly WriteableOp[], ejected: ReadonlySet<number>): WriteableOp[][] {
    const out: WriteableOp[][] = this.servers.map(() => []);
    const reader = this.dc.ejectDeletes ? this.readerRing(ejected) : undefined;
    for (const op of ops) {
      const owners = this.owners(op.key);
      for (const o of owners) out[o]!.push(op);
      if (reader) {
        const r = reader.index[reader.ring.serverFor(op.key)]!;
        if (!owners.includes(r)) out[r]!.push({ kind: 'delete', t: op.t, nsId: op.nsId, key: op.key });
      }
    }
    for (const b of this.backups) out[b] = ops as WriteableOp[];
    return out;
  }

  /** The ring a reader that ejected these servers uses; undefined when none of the ring's is ejected, or all are. */
  private readerRing(ejected: ReadonlySet<number>): PartialRing | undefined {
    const gone = [...ejected].filter((i) => i < this.ringSize).sort((a, b) => a - b);
    if (gone.length === 0 || gone.length === this.ringSize) return undefined;
    const id = gone.join(',');
    if (!this.readerRings.has(id)) {
      const index = this.members.flatMap((_, i) => (gone.includes(i) ? [] : [i]));
      this.readerRings.set(id, { ring: new KetamaRing(index.map((i) => this.members[i]!), this.dc.hash), index });
    }
    return this.readerRings.get(id);
  }

  holders(key: Buffer): number[] {
    return [...this.owners(key), ...this.backups];
  }

  holds(i: number, key: Buffer): boolean {
    return i >= this.ringSize || this.owners(key).includes(i);
  }

  warmPeers(i: number): WarmPeers {
    const others = (list: number[]) => list.filter((j) => j !== i);
    const ringServers = this.members.map((_, j) => j);
    if (i >= this.ringSize) return { full: others(this.backups), parts: ringServers };
    return { full: this.backups, parts: this.dc.replicas > 1 ? others(ringServers) : [] };
  }
}
