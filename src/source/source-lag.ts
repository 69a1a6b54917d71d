/**
 * How far a checkpoint is behind the primary, in transactions, from their GTID sets: MariaDB
 * positions (`domain-server-seq`, one per domain; sequence numbers grow within a domain) or
 * MySQL GTID sets (`uuid:1-5:7-9`, one per source server). Null when either side has no GTIDs
 * (file and offset say nothing across servers).
 */
import type { Position } from './checkpoint-store.js';

type Intervals = [number, number][];

function parseMariaDb(s: string): Map<string, number> | null {
  const m = new Map<string, number>();
  for (const part of s.split(',').map((x) => x.trim()).filter(Boolean)) {
    const r = /^(\d+)-(\d+)-(\d+)$/.exec(part);
    if (!r) return null;
    m.set(r[1]!, Math.max(m.get(r[1]!) ?? 0, Number(r[3])));
  }
  return m;
}

function parseMySql(s: string): Map<string, Intervals> | null {
  const m = new Map<string, Intervals>();
  for (const part of s.replace(/\s/g, '').split(',').filter(Boolean)) {
    const [uuid, ...ranges] = part.split(':');
    if (!uuid || ranges.length === 0) return null;
    const list = m.get(uuid.toLowerCase()) ?? [];
    for (const r of ranges) {
      const x = /^(\d+)(?:-(\d+))?$/.exec(r);
      if (!x) return null;
      list.push([Number(x[1]), Number(x[2] ?? x[1])]);
    }
    m.set(uuid.toLowerCase(), list);
  }
  return m;
}

/** How many numbers of `a` are not in `b`. */
function countMissing(a: Intervals, b: Intervals): number {
  let n = 0;
  for (const [lo, hi] of a) {
    let covered = 0;
    for (const [blo, bhi] of b) covered += Math.max(0, Math.min(hi, bhi) - Math.max(lo, blo) + 1);
    n += hi - lo + 1 - covered;
  }
  return n;
}

export function transactionsBehind(primary: Position, checkpoint: Position): number | null {
  if (!primary.gtidSet || checkpoint.gtidSet === undefined) return null;
  const pm = parseMariaDb(primary.gtidSet);
  if (pm) {
    const cm = parseMariaDb(checkpoint.gtidSet) ?? new Map<string, number>();
    let n = 0;
    for (const [domain, seq] of pm) n += Math.max(0, seq - (cm.get(domain) ?? 0));
    return n;
  }
  const px = parseMySql(primary.gtidSet);
  const cx = parseMySql(checkpoint.gtidSet);
  if (!px || !cx) return null;
  let n = 0;
  for (const [uuid, intervals] of px) n += countMissing(intervals, cx.get(uuid) ?? []);
  return n;
}

/**
 * Whether a server whose binlog ends at `server` has simply not reached `checkpoint` yet (a
 * replica behind): it lacks transactions the checkpoint covers, in the same GTID domains
 * (MariaDB: a checkpoint domain the server has never seen is another lineage, not a lag).
 */
export function serverIsBehind(checkpoint: Position, server: Position): boolean {
  if (!checkpoint.gtidSet || server.gtidSet === undefined) return false;
  const cm = parseMariaDb(checkpoint.gtidSet);
  if (cm) {
    const sm = parseMariaDb(server.gtidSet);
    if (!sm || [...cm.keys()].some((d) => !sm.has(d))) return false;
  }
  return (transactionsBehind(checkpoint, server) ?? 0) > 0;
}
