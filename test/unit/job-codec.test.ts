import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { JOB_FORMAT_VERSION, decodeJob, decodeOps, encodeJob, encodeJobRef, encodeOps, encodedSize, parsePayloadId, payloadId, readJob, type JobData } from '../../src/fanout/job-codec.js';
import type { DeleteOp, FlushMarkerOp, Op, SetOp } from '../../src/fanout/op.js';

const set = (t: number, nsId: number, key: Buffer | string, value: Buffer | string, expiresAt = 0): SetOp => ({
  kind: 'set',
  t,
  nsId,
  key: typeof key === 'string' ? Buffer.from(key) : key,
  value: typeof value === 'string' ? Buffer.from(value) : value,
  expiresAt,
});
const del = (t: number, nsId: number, key: Buffer | string): DeleteOp => ({ kind: 'delete', t, nsId, key: typeof key === 'string' ? Buffer.from(key) : key });
const flush = (t: number, nsId: number, flushId: number, token = '5f0c6b8e-2b1d-11ef-9a43-0242ac120002'): FlushMarkerOp => ({ kind: 'flush', t, nsId, flushId, token });

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

/** Encodes, passes the job data through JSON (as BullMQ stores it) and decodes again. */
function roundTrip(epoch: string, ops: readonly Op[]): { epoch: string; ops: Op[] } {
  const data = JSON.parse(JSON.stringify(encodeJob(epoch, ops))) as JobData;
  return decodeJob(data);
}

describe('encodeJob / decodeJob round trip', () => {
  test('set, delete and flush ops come back identical and in order, with the epoch', () => {
    const ops: Op[] = [set(1, 7, 'user:1', 'alice', 1_700_000_100), del(2, 7, 'user:2'), flush(3, 7, 42), set(4, 8, 'k', 'v', 0)];
    const out = roundTrip('epoch-abc', ops);
    assert.equal(out.epoch, 'epoch-abc');
    assert.deepEqual(out.ops, ops);
    for (const op of out.ops) if (op.kind !== 'flush') assert.ok(Buffer.isBuffer(op.key), 'keys decode as Buffers');
  });

  test('format 1: the job header carries version, epoch, op count and base64 payload', () => {
    const ops: Op[] = [set(1, 1, 'a', 'b'), del(2, 1, 'a')];
    const job = encodeJob('e1', ops);
    assert.equal(job.v, 1);
    assert.equal(job.e, 'e1');
    assert.equal(job.n, 2);
    assert.match(job.b!, /^[A-Za-z0-9+/]*={0,2}$/);
    assert.deepEqual(Buffer.from(job.b!, 'base64'), encodeOps(ops));
  });

  test('format 2: the job refers to a payload by an id that names its stream, partition and op range', () => {
    const ops: Op[] = [set(5, 1, 'a', 'b'), del(9, 1, 'a')];
    const id = payloadId('ep-1:x', 3, ops);
    assert.equal(id, 'ep-1:x:3:5:9');
    assert.deepEqual(parsePayloadId(id), { epoch: 'ep-1:x', partition: 3, lastT: 9 });
    assert.equal(parsePayloadId('nonsense'), undefined);
    const job = JSON.parse(JSON.stringify(encodeJobRef('ep-1:x', id, ops))) as JobData;
    assert.deepEqual(job, { v: JOB_FORMAT_VERSION, e: 'ep-1:x', n: 2, p: id, lt: 9 });
    assert.deepEqual(readJob(job), { epoch: 'ep-1:x', count: 2, coalesced: false, asDeletes: false, payload: id, lastT: 9 });
    assert.equal(readJob({ ...job, c: 1 }).coalesced, true, 'a job whose producer coalesced its ops says so');
    assert.throws(() => readJob({ ...job, p: undefined }), { message: 'corrupt job payload: no payload reference' });
  });

  test('an empty op list round-trips', () => {
    const job = encodeJob('e', []);
    assert.equal(job.n, 0);
    assert.equal(job.b, '');
    assert.deepEqual(decodeJob(job), { epoch: 'e', ops: [] });
  });

  test('empty values survive', () => {
    const ops: Op[] = [set(1, 1, 'empty', ''), set(2, 1, 'after', 'x')];
    const out = roundTrip('e', ops).ops;
    assert.deepEqual(out, ops);
    assert.equal((out[0] as SetOp).value.length, 0);
    assert.equal((out[1] as SetOp).value.toString(), 'x');
  });

  test('keys and values containing every byte value 0..255 survive unchanged', () => {
    const ops: Op[] = [set(1, 1, ALL_BYTES, ALL_BYTES, 5), del(2, 1, ALL_BYTES)];
    // Also one single-byte key per byte value, interleaved with sets, so any framing error shows.
    for (let b = 0; b < 256; b++) ops.push(b % 2 ? del(10 + b, 2, Buffer.from([b])) : set(10 + b, 2, Buffer.from([b]), Buffer.from([b, 255 - b]), b));
    const out = roundTrip('bytes', ops).ops;
    assert.equal(out.length, 2 + 256);
    assert.deepEqual(out, ops);
    const first = out[0] as SetOp;
    assert.ok(first.key.equals(ALL_BYTES));
    assert.ok(first.value.equals(ALL_BYTES));
  });

  test('a 900 KB value survives byte for byte', () => {
    const value = Buffer.alloc(900 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 31 + 7) & 0xff;
    const ops: Op[] = [del(1, 1, 'before'), set(2, 1, 'big', value, 0), del(3, 1, 'after')];
    const out = roundTrip('big', ops).ops;
    assert.equal(out.length, 3);
    const big = out[1] as SetOp;
    assert.equal(big.kind, 'set');
    assert.equal(big.value.length, 900 * 1024);
    assert.ok(big.value.equals(value));
    assert.deepEqual(out[2], ops[2]);
  });

  test('t values above 2^32 (up to 2^53-1) and flush ids keep full precision', () => {
    const ts = [2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER];
    const ops: Op[] = ts.flatMap((t) => [set(t, 1, 'k', 'v'), del(t, 1, 'k'), flush(t, 1, t)]);
    const out = roundTrip('t', ops).ops;
    assert.deepEqual(
      out.map((o) => o.t),
      ts.flatMap((t) => [t, t, t]),
    );
    assert.deepEqual(
      out.filter((o): o is FlushMarkerOp => o.kind === 'flush').map((o) => o.flushId),
      ts,
    );
  });

  test('negative and extreme nsId values survive', () => {
    const ids = [-1, -2_147_483_648, 0, 2_147_483_647];
    const ops: Op[] = ids.flatMap((ns, i) => [set(i, ns, 'k', 'v'), del(i, ns, 'k'), flush(i, ns, 1)]);
    assert.deepEqual(
      roundTrip('ns', ops).ops.map((o) => o.nsId),
      ids.flatMap((ns) => [ns, ns, ns]),
    );
  });

  test('expiresAt at 0 and at the 32-bit maximum survives', () => {
    const ops: Op[] = [set(1, 1, 'a', 'v', 0), set(2, 1, 'b', 'v', 4_294_967_295), set(3, 1, 'c', 'v', 1_700_000_000)];
    assert.deepEqual(
      roundTrip('x', ops).ops.map((o) => (o as SetOp).expiresAt),
      [0, 4_294_967_295, 1_700_000_000],
    );
  });

  test('the 250-byte maximum key survives', () => {
    const key = Buffer.alloc(250, 0x41);
    assert.deepEqual(roundTrip('k', [set(1, 1, key, 'v'), del(2, 1, key)]).ops, [set(1, 1, key, 'v'), del(2, 1, key)]);
  });
});

describe('decodeJob rejects what it cannot read', () => {
  const good = encodeJob('e', [set(1, 1, 'key', 'value'), del(2, 1, 'key')]);

  test('a newer format version, naming both versions', () => {
    assert.throws(() => decodeJob({ ...good, v: 3 }), {
      message: 'job format 3 is not understood by this worker (expects 1 or 2); upgrade the workers',
    });
  });

  test('a missing or older version', () => {
    assert.throws(() => decodeJob({ ...good, v: 0 }), /job format 0 is not understood by this worker \(expects 1 or 2\)/);
    assert.throws(() => decodeJob({ ...good, v: undefined as unknown as number }), /job format undefined is not understood/);
  });

  test('an op count that disagrees with the header', () => {
    assert.throws(() => decodeJob({ ...good, n: 3 }), { message: 'corrupt job payload: 2 ops decoded, header says 3' });
    assert.throws(() => decodeJob({ ...good, n: 1 }), { message: 'corrupt job payload: 2 ops decoded, header says 1' });
  });

  test('an unknown op kind, naming the kind and its byte offset', () => {
    const buf = encodeOps([set(1, 1, 'key', 'value'), del(2, 1, 'key')]);
    const second = encodedSize(set(1, 1, 'key', 'value'));
    const corrupt0 = Buffer.from(buf);
    corrupt0[0] = 9;
    assert.throws(() => decodeOps(corrupt0), { message: 'corrupt job payload: unknown op kind 9 at byte 0' });
    const corrupt1 = Buffer.from(buf);
    corrupt1[second] = 0;
    assert.throws(() => decodeJob({ v: 1, e: 'e', n: 2, b: corrupt1.toString('base64') }), {
      message: `corrupt job payload: unknown op kind 0 at byte ${second}`,
    });
  });

  test('a payload truncated inside a value or key', () => {
    const buf = encodeOps([set(1, 1, 'key', 'a longer value')]);
    for (const cut of [buf.length - 1, buf.length - 5]) {
      assert.throws(() => decodeJob({ v: 1, e: 'e', n: 1, b: buf.subarray(0, cut).toString('base64') }), {
        message: /^corrupt job payload: truncated op \(value at byte \d+ of \d+\)$/,
      });
    }
    const d = encodeOps([del(1, 1, 'abcdef')]);
    assert.throws(() => decodeOps(d.subarray(0, d.length - 2)), { message: /^corrupt job payload: truncated op \(key at byte/ });
  });

  test('a corrupt value length pointing past the end', () => {
    const buf = Buffer.from(encodeOps([set(1, 1, 'k', 'v')]));
    // value length field sits after kind(1) t(8) ns(4) exp(4) keyLen(2) key(1)
    buf.writeUInt32BE(1_000_000, 20);
    assert.throws(() => decodeOps(buf), { message: 'corrupt job payload: truncated op (value at byte 24 of 25)' });
  });

  test(
    'a payload truncated at any byte is reported as a corrupt job payload',
    () => {
      const buf = encodeOps([set(1, 1, 'k', 'vvvv'), del(2, 1, 'kk'), flush(3, 1, 9)]);
      const bad: string[] = [];
      for (let cut = 1; cut < buf.length; cut++) {
        try {
          // A cut between two ops leaves a well-formed shorter list: the job header's op count catches it.
          decodeJob({ v: 1, e: 'e', n: 3, b: buf.subarray(0, cut).toString('base64') });
          bad.push(`${cut}: no error`);
        } catch (err) {
          if (!/^corrupt job payload/.test((err as Error).message)) bad.push(`${cut}: ${(err as Error).message}`);
        }
      }
      assert.deepEqual(bad, []);
    },
  );
});

describe('encodedSize', () => {
  test('has the documented layout sizes', () => {
    // set: 1 + 8 + 4 + 4 + 2 + key + 4 + value
    assert.equal(encodedSize(set(1, 1, 'abc', 'hello')), 23 + 3 + 5);
    assert.equal(encodedSize(set(1, 1, 'k', '')), 24);
    // delete: 1 + 8 + 4 + 2 + key
    assert.equal(encodedSize(del(1, 1, 'abc')), 18);
    // flush: 1 + 8 + 4 + 8 + 1 + token
    assert.equal(encodedSize(flush(1, 1, 5)), 22 + 36);
    assert.equal(encodedSize(flush(1, 1, 5, '')), 22);
  });

  test('matches the encoded length of every op alone and of a whole list', () => {
    const value = Buffer.alloc(900 * 1024, 1);
    const ops: Op[] = [set(1, 1, ALL_BYTES, value, 7), del(2, -3, ALL_BYTES), flush(3, 1, 2 ** 40), set(4, 1, 'k', ''), del(5, 1, 'é')];
    let total = 0;
    for (const op of ops) {
      assert.equal(encodedSize(op), encodeOps([op]).length, op.kind);
      total += encodedSize(op);
    }
    assert.equal(encodeOps(ops).length, total);
  });

  test('counts bytes, not characters, for multi-byte keys and values', () => {
    assert.equal(encodedSize(set(1, 1, Buffer.from('€'), Buffer.from('€€'))), 23 + 3 + 6);
  });
});
