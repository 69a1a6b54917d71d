/**
 * A cache operation as it travels from the tailer to the data-center workers.
 *
 * `t` is the op's own sequence number: consecutive over the tailer's stream (one per row, in
 * binlog order) and stable across restarts (the checkpoint saves the last one), so a worker can
 * tell an op it already applied (replayed after a tailer restart) from a new one, even when one
 * transaction spans several jobs (decision 0019).
 */
export type Op = SetOp | DeleteOp | FlushMarkerOp;

export interface SetOp {
  kind: 'set';
  t: number;
  nsId: number;
  key: Buffer;
  value: Buffer;
  /** Absolute expiry in unix seconds (0 = never), fixed from the time of the statement that wrote it. */
  expiresAt: number;
}

export interface DeleteOp {
  kind: 'delete';
  t: number;
  nsId: number;
  key: Buffer;
}

/** An op that changes a key on a memcached server. */
export type WriteableOp = SetOp | DeleteOp;

/** Written after a namespace flush's deletes; every partition of every data center records it. */
export interface FlushMarkerOp {
  kind: 'flush';
  t: number;
  nsId: number;
  flushId: number;
  /** Random token of the flush request (mc_flushes.token): ids restart after a reinstall, tokens do not. */
  token: string;
}

/** memcached treats an exptime above 30 days as an absolute unix time. */
export const MEMCACHED_RELATIVE_EXPIRY_MAX = 2_592_000;
/** memcached keeps exptime in 32 bits. */
export const MEMCACHED_EXPIRY_MAX = 4_294_967_295;
/** Bytes memcached adds to key + value in an item (header, CAS, terminators); measured on 1.6. */
export const MEMCACHED_ITEM_OVERHEAD = 64;
export const MEMCACHED_KEY_MAX = 250;

/**
 * Why a key cannot be stored in memcached, or undefined if it can. The same rules as the SQL
 * function mc_row_problem(), checked again here for rows that did not come through it.
 */
export function keyProblem(key: Buffer | null | undefined): string | undefined {
  if (key === null || key === undefined) return 'key is NULL';
  if (key.length === 0) return 'key is empty';
  if (key.length > MEMCACHED_KEY_MAX) return `key is ${key.length} bytes; memcached keys are at most ${MEMCACHED_KEY_MAX} bytes`;
  for (let i = 0; i < key.length; i++) {
    const b = key[i]!;
    if (b <= 0x20 || b === 0x7f) {
      const what = b === 0x20 ? 'a space' : `control byte 0x${b.toString(16).toUpperCase().padStart(2, '0')}`;
      return `key has ${what} at byte ${i + 1}; memcached keys may not contain spaces or control characters`;
    }
  }
  return undefined;
}

/** Turns memcached's `expire` (0, relative seconds, or unix time) into an absolute time. */
export function absoluteExpiry(expire: number, eventTimeSec: number): number {
  if (expire === 0) return 0;
  return expire <= MEMCACHED_RELATIVE_EXPIRY_MAX ? eventTimeSec + expire : expire;
}

/** A printable form of a key for logs and dead letters: its text if it is valid UTF-8 without control bytes, else 0x-hex. */
export function printableKey(key: Buffer | null | undefined): string {
  if (!key) return String(key);
  const text = key.toString('utf8');
  // eslint-disable-next-line no-control-regex
  if (Buffer.from(text, 'utf8').equals(key) && !/[\u0000-\u001f\u007f\ufffd]/.test(text)) return text.length > 300 ? `${text.slice(0, 300)}…` : text;
  return `0x${key.subarray(0, 150).toString('hex')}${key.length > 150 ? '…' : ''}`;
}

/**
 * Keeps the last op per key, in the order of those last ops; flush markers stay where they
 * are among them. The state a run of ops leaves behind is the same, and what is left concerns
 * distinct keys, so any subset can be applied in any order or retried. The tailer coalesces
 * each job before it is stored (fewer bytes in Redis, fewer writes), the workers again per job.
 * The last op of the run is always kept, so the run's last `t` is unchanged.
 */
export function coalesce<T extends Op>(ops: readonly T[]): T[] {
  const seen = new Set<string>();
  const kept: T[] = [];
  for (let i = ops.length - 1; i >= 0; i--) {
    const op = ops[i]!;
    if (op.kind !== 'flush') {
      const k = op.key.toString('latin1');
      if (seen.has(k)) continue;
      seen.add(k);
    }
    kept.push(op);
  }
  return kept.reverse();
}
