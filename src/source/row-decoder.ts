/**
 * Turns one mc_storage row from the binlog into an op, or explains why it cannot be one.
 *
 * Rows written through the procedures are already valid. Rows inserted directly are checked
 * by the table's trigger (it fills `problem`) and checked again here against memcached's own
 * limits, so that nothing a server would refuse or misread is ever sent, and nothing is
 * dropped silently: a bad row becomes a dead letter with its reason.
 *
 * The binlog describes each row with the table's columns as they were when it was written
 * (binlog_row_metadata=FULL), so an ALTER TABLE that keeps the columns mcrepl reads (an added
 * column, say) changes nothing here. A row that lacks one of them, or whose value could not
 * come from the column's type (a number where mc_key should be bytes), was written after a
 * change to mc_storage that mcrepl cannot follow: it is dead-lettered with a reason naming the
 * change, rather than read as NULL and refused for the wrong reason.
 */
import {
  MEMCACHED_EXPIRY_MAX,
  MEMCACHED_ITEM_OVERHEAD,
  MEMCACHED_RELATIVE_EXPIRY_MAX,
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

/** The columns of mc_storage (sql/001_tables.sql) the decoder reads, and what each must hold. */
const STORAGE_COLUMNS = {
  ns_id: 'integer',
  mc_key: 'bytes',
  mc_value: 'bytes',
  expire: 'integer',
  op: 'text',
  flush_id: 'integer',
  problem: 'text',
} as const;

type ColumnKind = (typeof STORAGE_COLUMNS)[keyof typeof STORAGE_COLUMNS];

const RESTORE = 'restore it as in sql/001_tables.sql; rows written meanwhile are dead-lettered, not applied';

function fits(kind: ColumnKind, v: unknown): boolean {
  if (v === null) return true;
  if (kind === 'integer') return asInt(v) !== undefined;
  return typeof v === 'string' || Buffer.isBuffer(v);
}

/** What a value of an unexpected type looks like in a reason: its type and a short sample. */
function describeValue(v: unknown): string {
  if (Buffer.isBuffer(v)) return `bytes (${printableKey(v.subarray(0, 16))})`;
  if (typeof v === 'string') return `text ('${v.slice(0, 32)}')`;
  if (v instanceof Date) return `a date (${Number.isNaN(v.getTime()) ? 'invalid' : v.toISOString()})`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return `a ${typeof v} (${String(v)})`;
  return `a value of type ${(v as object | undefined)?.constructor?.name ?? typeof v}`;
}

/** The columns and their kinds, listed once (schemaProblem runs for every row). */
const COLUMN_LIST = Object.entries(STORAGE_COLUMNS) as [keyof typeof STORAGE_COLUMNS, ColumnKind][];

/**
 * Why the row cannot be read as an mc_storage row at all (the table's schema was changed), or
 * undefined. Extra columns are fine: only the ones mcrepl reads matter.
 */
export function schemaProblem(row: Record<string, unknown>): string | undefined {
  let missing: string[] | undefined;
  for (const [column] of COLUMN_LIST) if (row[column] === undefined) (missing ??= []).push(column);
  if (missing) {
    const s = missing.length > 1 ? 's' : '';
    return `mc_storage's schema changed: the row has no column${s} ${missing.join(', ')} (it has ${Object.keys(row).filter((c) => row[c] !== undefined).join(', ') || 'none'}); ${RESTORE}`;
  }
  for (const [column, kind] of COLUMN_LIST) {
    const v = row[column];
    if (!fits(kind, v)) {
      const expected = kind === 'integer' ? 'an integer' : kind;
      return `mc_storage's schema changed: column ${column} holds ${describeValue(v)} instead of ${expected} (its type was altered); ${RESTORE}`;
    }
  }
  return undefined;
}

function asText(v: unknown): unknown {
  return Buffer.isBuffer(v) ? v.toString('utf8') : v;
}

/** A column value as it may appear in a dead letter: JSON-safe and short. */
function scalar(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'string') return v.length > 64 ? `${v.slice(0, 64)}…` : v;
  if (Buffer.isBuffer(v)) return printableKey(v.subarray(0, 64));
  return String(v);
}

function asBuffer(v: unknown): Buffer | null | undefined {
  if (v === null || v === undefined) return v as null | undefined;
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  return undefined;
}

function asInt(v: unknown): number | null | undefined {
  if (v === null || v === undefined) return v as null | undefined;
  if (typeof v !== 'number' && typeof v !== 'bigint' && (typeof v !== 'string' || v.trim() === '')) return undefined;
  const n = Number(v);
  return Number.isFinite(n) && Number.isInteger(n) ? n : undefined;
}

/** What a bad row looks like in a dead letter: printable, with value sizes instead of bytes. */
export function describeRow(row: Record<string, unknown>): Record<string, unknown> {
  const key = asBuffer(row.mc_key);
  const value = asBuffer(row.mc_value);
  return {
    op: scalar(row.op),
    nsId: scalar(row.ns_id),
    key: key === undefined ? String(row.mc_key) : printableKey(key),
    keyBytes: key?.length ?? null,
    valueBytes: value?.length ?? null,
    expire: row.expire === undefined || row.expire === null ? null : String(row.expire),
    ...(row.flush_id !== null && row.flush_id !== undefined ? { flushId: String(row.flush_id) } : {}),
  };
}

/** A unix time as the SQL side prints it: `1970-02-10 00:00:00` (UTC). */
function utcText(unixSec: number): string {
  return new Date(unixSec * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

/**
 * Why an `expire` above 30 days (a unix time to memcached) cannot be a set written at
 * `eventTimeSec`, or undefined. memcached drops an item whose absolute expiry has passed as soon
 * as it is stored, so such a set would never appear anywhere, silently (typically seconds meant
 * as a TTL longer than 30 days: 3456000 is 1970-02-10). The same rule and message as
 * mc_row_problem() in sql/010_validation.sql, against the same time: the statement's, as its
 * binlog event carries it, so a replay of the same transaction decides the same way. (A time
 * that passes later, before the transaction commits or before the op is applied, is not bad
 * input: the worker deletes the key, as for any set whose expiry has passed.)
 */
export function pastExpiryProblem(expire: number, eventTimeSec: number): string | undefined {
  if (expire <= MEMCACHED_RELATIVE_EXPIRY_MAX || expire > eventTimeSec) return undefined;
  return (
    `expire ${expire} is above ${MEMCACHED_RELATIVE_EXPIRY_MAX} (30 days), so memcached reads it as a unix time, ` +
    `and that time (${utcText(expire)} UTC) has already passed; give seconds up to ${MEMCACHED_RELATIVE_EXPIRY_MAX} or a future unix time`
  );
}

export function decodeRow(row: Record<string, unknown>, t: number, eventTimeSec: number, limits: DecodeLimits): DecodedRow {
  const op = asText(row.op);
  const bad = (reason: string): DecodedRow => {
    const key = asBuffer(row.mc_key);
    const usable = key && !keyProblem(key) && op !== 'flush';
    return { ok: false, reason, row: describeRow(row), ...(usable ? { instead: { kind: 'delete', t, nsId: asInt(row.ns_id) ?? 0, key } } : {}) };
  };
  const sp = schemaProblem(row);
  if (sp) return bad(sp);
  const problem = asText(row.problem);
  if (typeof problem === 'string' && problem !== '') return bad(problem);

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
  // Dead-lettered, and (like every bad set with a usable key) the key is deleted everywhere
  // instead: the set was meant to replace the key's value, so the old one must not linger.
  const past = pastExpiryProblem(expire, eventTimeSec);
  if (past) return bad(past);
  if (key!.length + value.length + MEMCACHED_ITEM_OVERHEAD > limits.maxItemBytes) {
    return bad(
      `value is ${value.length} bytes; with its key and ${MEMCACHED_ITEM_OVERHEAD} bytes of overhead it exceeds the memcached item size of ${limits.maxItemBytes} bytes (memcached.maxItemBytes)`,
    );
  }
  return { ok: true, op: { kind: 'set', t, nsId, key: key!, value, expiresAt: absoluteExpiry(expire, eventTimeSec) } };
}
