/**
 * Turns one mc_storage row from the binlog into an op, or explains why it cannot be one.
 *
 * Rows written through the procedures are already valid. Rows inserted directly are checked
 * by the table's trigger (it fills `problem`) and checked again here against memcached's own
 * limits, so that nothing a server would refuse or misread is ever sent, and nothing is
 * dropped silently: a bad row becomes a dead letter with its reason.
 */
import {
  MEMCACHED_EXPIRY_MAX,
  MEMCACHED_ITEM_OVERHEAD,
  absoluteExpiry,
  keyProblem,
  printableKey,
  type DeleteOp,
  type Op,
} from '../fanout/op.js';

/**
 * A bad row with a usable key still becomes a delete of that key (`instead`): the row was
 * meant to replace the key's value, so no server may keep serving the old one. A cache miss is
 * always safe; a stale hit is not.
 */
export type DecodedRow = { ok: true; op: Op } | { ok: false; reason: string; row: Record<string, unknown>; instead?: DeleteOp };

export interface DecodeLimits {
  maxItemBytes: number;
}

function asBuffer(v: unknown): Buffer | null | undefined {
  if (v === null || v === undefined) return v as null | undefined;
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  return undefined;
}

function asInt(v: unknown): number | null | undefined {
  if (v === null || v === undefined) return v as null | undefined;
  const n = typeof v === 'bigint' ? Number(v) : Number(v);
  return Number.isFinite(n) && Number.isInteger(n) ? n : undefined;
}

/** What a bad row looks like in a dead letter: printable, with value sizes instead of bytes. */
export function describeRow(row: Record<string, unknown>): Record<string, unknown> {
  const key = asBuffer(row.mc_key);
  const value = asBuffer(row.mc_value);
  return {
    op: row.op ?? null,
    nsId: row.ns_id ?? null,
    key: key === undefined ? String(row.mc_key) : printableKey(key),
    keyBytes: key?.length ?? null,
    valueBytes: value?.length ?? null,
    expire: row.expire === undefined || row.expire === null ? null : String(row.expire),
    ...(row.flush_id !== null && row.flush_id !== undefined ? { flushId: String(row.flush_id) } : {}),
  };
}

export function decodeRow(row: Record<string, unknown>, t: number, eventTimeSec: number, limits: DecodeLimits): DecodedRow {
  const bad = (reason: string): DecodedRow => {
    const key = asBuffer(row.mc_key);
    const usable = key && !keyProblem(key) && row.op !== 'flush';
    return { ok: false, reason, row: describeRow(row), ...(usable ? { instead: { kind: 'delete', t, nsId: asInt(row.ns_id) ?? 0, key } } : {}) };
  };
  if (typeof row.problem === 'string' && row.problem !== '') return bad(row.problem);

  const op = row.op;
  if (op !== 'set' && op !== 'delete' && op !== 'flush') {
    return bad(`unknown op ${op === null || op === undefined ? 'NULL' : `'${String(op).slice(0, 32)}'`}; expected set, delete or flush`);
  }
  const nsId = asInt(row.ns_id);
  if (nsId === null || nsId === undefined) return bad('namespace id is NULL');

  if (op === 'flush') {
    const flushId = asInt(row.flush_id);
    if (flushId === null || flushId === undefined || flushId <= 0) return bad('flush marker without flush_id; use flush_namespace()');
    // The token rides in mc_value; markers written by hand may lack it.
    const token = (asBuffer(row.mc_value)?.toString('utf8') ?? '').slice(0, 64);
    return { ok: true, op: { kind: 'flush', t, nsId, flushId, token } };
  }

  const key = asBuffer(row.mc_key);
  const kp = keyProblem(key);
  if (kp) return bad(kp);
  if (op === 'delete') return { ok: true, op: { kind: 'delete', t, nsId, key: key! } };

  const value = asBuffer(row.mc_value);
  if (value === null || value === undefined) return bad('value is NULL; use delete_key() to remove a key');
  const expire = asInt(row.expire);
  if (expire === null || expire === undefined) return bad('expire is NULL; use 0 for no expiry');
  if (expire < 0) return bad(`expire is ${expire}; use 0 (never), seconds up to 2592000, or a unix timestamp`);
  if (expire > MEMCACHED_EXPIRY_MAX) return bad(`expire ${expire} is beyond the 32-bit unix time memcached accepts`);
  if (key!.length + value.length + MEMCACHED_ITEM_OVERHEAD > limits.maxItemBytes) {
    return bad(
      `value is ${value.length} bytes; with its key and ${MEMCACHED_ITEM_OVERHEAD} bytes of overhead it exceeds the memcached item size of ${limits.maxItemBytes} bytes (memcached.maxItemBytes)`,
    );
  }
  return { ok: true, op: { kind: 'set', t, nsId, key: key!, value, expiresAt: absoluteExpiry(expire, eventTimeSec) } };
}
