/**
 * The payload of one BullMQ job: a run of ops for one (data center, partition), in source
 * order. Ops are packed in a compact binary form (keys and values are arbitrary bytes, and a
 * job carries thousands of ops).
 *
 * Format 1 carries the ops inline, base64, in every data center's job: fine for a few ops (live
 * traffic), costly for many (several times the bytes, and on this machine ioredis and BullMQ
 * spend ~20 ns per byte on such strings). Format 2: the packed ops are stored once per partition
 * in a Redis hash shared by every data center's job (`RedisKeys.payload`), as raw bytes; the
 * job carries only its id, the op count and the last op's `t`. The tailer picks by size.
 *
 *   set:    u8 1 | f64 t | i32 nsId | u32 expiresAt | u16 keyLen | key | u32 valueLen | value
 *   delete: u8 2 | f64 t | i32 nsId | u16 keyLen | key
 *   flush:  u8 3 | f64 t | i32 nsId | f64 flushId | u8 tokenLen | token
 */
import { McreplError } from '../errors.js';
import type { Op } from './op.js';

export const JOB_FORMAT_VERSION = 2;

export interface JobData {
  /** Format version: 1 = ops inline (`b`), 2 = ops in a shared payload (`p`). */
  v: number;
  /** Epoch of the tailer stream the ops' `t` numbers belong to. */
  e: string;
  /** Number of ops. */
  n: number;
  /** Format 1: the packed ops, base64. */
  b?: string;
  /** Format 2: payload id (see RedisKeys.payload). */
  p?: string;
  /** Format 2: `t` of the last op (a job at or below the watermark is skipped unread). */
  lt?: number;
  /**
   * 1: no two ops concern the same key (the producer coalesced them), so the worker need not
   * coalesce again. Absent: the worker coalesces.
   */
  c?: 1;
  /**
   * 1: apply every op as a delete of its key (a large two-phase XA transaction, which mcrepl
   * does not apply: its keys are deleted instead, as for any bad row).
   */
  x?: 1;
  /** When the tailer read the oldest transaction of the job (ms since the epoch): where its apply lag starts. */
  ts?: number;
}

/** A job to add to one partition's queue of every data center (or of `dcs` only). */
export interface JobRef {
  partition: number;
  data: JobData;
  dcs?: readonly string[];
}

const KIND_SET = 1;
const KIND_DELETE = 2;
const KIND_FLUSH = 3;

export function encodedSize(op: Op): number {
  switch (op.kind) {
    case 'set':
      return 1 + 8 + 4 + 4 + 2 + op.key.length + 4 + op.value.length;
    case 'delete':
      return 1 + 8 + 4 + 2 + op.key.length;
    case 'flush':
      return 1 + 8 + 4 + 8 + 1 + Buffer.byteLength(op.token);
  }
}

export function encodeOps(ops: readonly Op[]): Buffer {
  let size = 0;
  for (const op of ops) size += encodedSize(op);
  const buf = Buffer.allocUnsafe(size);
  let o = 0;
  for (const op of ops) {
    switch (op.kind) {
      case 'set':
        o = buf.writeUInt8(KIND_SET, o);
        o = buf.writeDoubleBE(op.t, o);
        o = buf.writeInt32BE(op.nsId, o);
        o = buf.writeUInt32BE(op.expiresAt, o);
        o = buf.writeUInt16BE(op.key.length, o);
        o += op.key.copy(buf, o);
        o = buf.writeUInt32BE(op.value.length, o);
        o += op.value.copy(buf, o);
        break;
      case 'delete':
        o = buf.writeUInt8(KIND_DELETE, o);
        o = buf.writeDoubleBE(op.t, o);
        o = buf.writeInt32BE(op.nsId, o);
        o = buf.writeUInt16BE(op.key.length, o);
        o += op.key.copy(buf, o);
        break;
      case 'flush':
        o = buf.writeUInt8(KIND_FLUSH, o);
        o = buf.writeDoubleBE(op.t, o);
        o = buf.writeInt32BE(op.nsId, o);
        o = buf.writeDoubleBE(op.flushId, o);
        o = buf.writeUInt8(Buffer.byteLength(op.token), o);
        o += buf.write(op.token, o);
        break;
    }
  }
  return buf;
}

export function decodeOps(buf: Buffer): Op[] {
  return readOps(buf, 0, Infinity).ops;
}

/** Decodes up to `max` ops from byte `start`; `next` is where the following op starts. */
export function readOps(buf: Buffer, start: number, max: number): { ops: Op[]; next: number } {
  const ops: Op[] = [];
  let o = start;
  // Every read is bounds-checked, so a damaged payload is reported as such, never as a raw
  // RangeError or (worse) as ops made of the wrong bytes.
  const need = (n: number, what: string) => {
    if (o + n > buf.length) throw corrupt(`truncated op (${what} at byte ${o} of ${buf.length})`);
  };
  while (o < buf.length && ops.length < max) {
    need(13, 'op header');
    const kind = buf.readUInt8(o);
    const t = buf.readDoubleBE(o + 1);
    const nsId = buf.readInt32BE(o + 9);
    o += 13;
    if (kind === KIND_SET) {
      need(6, 'expiry and key length');
      const expiresAt = buf.readUInt32BE(o);
      const keyLen = buf.readUInt16BE(o + 4);
      o += 6;
      need(keyLen, 'key');
      const key = buf.subarray(o, o + keyLen);
      o += keyLen;
      need(4, 'value length');
      const valueLen = buf.readUInt32BE(o);
      o += 4;
      need(valueLen, 'value');
      const value = buf.subarray(o, o + valueLen);
      o += valueLen;
      ops.push({ kind: 'set', t, nsId, key, value, expiresAt });
    } else if (kind === KIND_DELETE) {
      need(2, 'key length');
      const keyLen = buf.readUInt16BE(o);
      o += 2;
      need(keyLen, 'key');
      ops.push({ kind: 'delete', t, nsId, key: buf.subarray(o, o + keyLen) });
      o += keyLen;
    } else if (kind === KIND_FLUSH) {
      need(9, 'flush id and token length');
      const flushId = buf.readDoubleBE(o);
      const tokenLen = buf.readUInt8(o + 8);
      o += 9;
      need(tokenLen, 'flush token');
      ops.push({ kind: 'flush', t, nsId, flushId, token: buf.toString('utf8', o, o + tokenLen) });
      o += tokenLen;
    } else {
      throw corrupt(`unknown op kind ${kind} at byte ${o - 13}`);
    }
  }
  return { ops, next: o };
}

/** A payload that cannot be read. Not retriable: the same bytes give the same answer. */
export function corrupt(detail: string): McreplError {
  return new McreplError('JOB_CORRUPT', `corrupt job payload: ${detail}`);
}

/** Format 1: the ops inline, base64 (for small jobs; `packed` = encodeOps(ops) if at hand). */
export function encodeJob(epoch: string, ops: readonly Op[], packed = encodeOps(ops)): JobData {
  return { v: 1, e: epoch, n: ops.length, b: packed.toString('base64') };
}

/** Format 2: a reference to the payload holding the ops. */
export function encodeJobRef(epoch: string, payloadId: string, ops: readonly Op[]): JobData {
  return { v: JOB_FORMAT_VERSION, e: epoch, n: ops.length, p: payloadId, lt: ops[ops.length - 1]?.t ?? 0 };
}

/** Payload id of a partition's ops in one batch: unique per stream and op range. */
export function payloadId(epoch: string, partition: number, ops: readonly Op[]): string {
  return `${epoch}:${partition}:${ops[0]?.t ?? 0}:${ops[ops.length - 1]?.t ?? 0}`;
}

/** Epoch, partition and last `t` of a payload id (undefined if it is not one). */
export function parsePayloadId(id: string): { epoch: string; partition: number; lastT: number } | undefined {
  const m = /^(.*):(\d+):(\d+):(\d+)$/.exec(id);
  return m ? { epoch: m[1]!, partition: Number(m[2]), lastT: Number(m[4]) } : undefined;
}

/** Checks a job's header; the payload reference or the inline ops. */
export function readJob(data: JobData): { epoch: string; count: number; coalesced: boolean; asDeletes: boolean } & ({ inline: Buffer } | { payload: string; lastT: number }) {
  if (data?.v !== 1 && data?.v !== JOB_FORMAT_VERSION) {
    throw new McreplError('JOB_FORMAT_UNSUPPORTED', `job format ${data?.v} is not understood by this worker (expects 1 or ${JOB_FORMAT_VERSION}); upgrade the workers`);
  }
  if (data.v === 1) {
    if (typeof data.b !== 'string') throw corrupt('no op payload');
    return { epoch: data.e, count: data.n, coalesced: data.c === 1, asDeletes: data.x === 1, inline: Buffer.from(data.b, 'base64') };
  }
  if (typeof data.p !== 'string' || typeof data.lt !== 'number') throw corrupt('no payload reference');
  return { epoch: data.e, count: data.n, coalesced: data.c === 1, asDeletes: data.x === 1, payload: data.p, lastT: data.lt };
}

/** Unpacks a job's ops and checks their count against its header. */
export function decodeJobOps(buf: Buffer, count: number): Op[] {
  const ops = decodeOps(buf);
  if (ops.length !== count) throw corrupt(`${ops.length} ops decoded, header says ${count}`);
  return ops;
}

/**
 * A job's ops in slices of at most `size`, in order, so that a huge job (written by an older
 * tailer, which put a whole transaction in one job) never becomes a million objects at once.
 * The whole payload is checked before the first slice is handed out: a damaged job is refused
 * before any of it is applied.
 */
export function sliceJobOps(buf: Buffer, count: number, size: number): Iterable<Op[]> {
  if (count <= size) return [decodeJobOps(buf, count)];
  let n = 0;
  for (let o = 0; o < buf.length; ) {
    const r = readOps(buf, o, size);
    n += r.ops.length;
    o = r.next;
  }
  if (n !== count) throw corrupt(`${n} ops decoded, header says ${count}`);
  return (function* () {
    for (let o = 0; o < buf.length; ) {
      const r = readOps(buf, o, size);
      o = r.next;
      yield r.ops;
    }
  })();
}

export function decodeJob(data: JobData): { epoch: string; ops: Op[] } {
  const job = readJob(data);
  if (!('inline' in job)) throw new Error('decodeJob: the job refers to a payload; read it with readJob');
  return { epoch: job.epoch, ops: decodeJobOps(job.inline, job.count) };
}
