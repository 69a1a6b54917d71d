import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeRow, describeRow, pastExpiryProblem, type DecodedRow } from '../../src/source/row-decoder.js';
import type { Op } from '../../src/fanout/op.js';

const T = 12;
const EVENT = 1_700_000_000;
const LIMITS = { maxItemBytes: 1_048_576 };
const KEY_TAIL = '; memcached keys may not contain spaces or control characters';

const setRow = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  ns_id: 7,
  mc_key: Buffer.from('user:1'),
  mc_value: Buffer.from('hello'),
  expire: 0,
  op: 'set',
  flush_id: null,
  problem: null,
  ...over,
});
const deleteRow = (over: Record<string, unknown> = {}) => setRow({ op: 'delete', mc_value: null, expire: 0, ...over });
const flushRow = (over: Record<string, unknown> = {}) => setRow({ op: 'flush', mc_key: null, mc_value: null, expire: 0, flush_id: 5, ...over });

function ok(d: DecodedRow): Op {
  if (!d.ok) assert.fail(`expected ok, got: ${d.reason}`);
  return d.op;
}
function reason(d: DecodedRow): string {
  if (d.ok) assert.fail(`expected a refusal, got op ${JSON.stringify(d.op.kind)}`);
  return d.reason;
}
const decode = (row: Record<string, unknown>, limits = LIMITS) => decodeRow(row, T, EVENT, limits);

describe('decodeRow: valid rows', () => {
  test('a set with Buffer key and value', () => {
    assert.deepEqual(ok(decode(setRow())), { kind: 'set', t: T, nsId: 7, key: Buffer.from('user:1'), value: Buffer.from('hello'), expiresAt: 0 });
  });

  test('string key and value become their UTF-8 bytes', () => {
    const op = ok(decode(setRow({ mc_key: 'clé', mc_value: 'wörld' })));
    assert.equal(op.kind, 'set');
    if (op.kind !== 'set') return;
    assert.deepEqual(op.key, Buffer.from([0x63, 0x6c, 0xc3, 0xa9]));
    assert.deepEqual(op.value, Buffer.from('wörld', 'utf8'));
  });

  test('an empty value is a valid set', () => {
    const op = ok(decode(setRow({ mc_value: Buffer.alloc(0) })));
    assert.equal(op.kind === 'set' && op.value.length, 0);
  });

  test('expiresAt is computed from the event time, not the clock', () => {
    const at = (expire: unknown, eventTime = EVENT) => {
      const op = ok(decodeRow(setRow({ expire }), T, eventTime, LIMITS));
      assert.equal(op.kind, 'set');
      return op.kind === 'set' ? op.expiresAt : NaN;
    };
    assert.equal(at(0), 0);
    assert.equal(at(1), EVENT + 1);
    assert.equal(at(100), EVENT + 100);
    assert.equal(at(100, 1_000_000_000), 1_000_000_100);
    assert.equal(at(2_592_000), EVENT + 2_592_000);
    // Above 30 days it is a unix time, which must be after the statement's time (see the refusals below).
    assert.equal(at(2_592_001, 2_592_000), 2_592_001);
    assert.equal(at(EVENT + 1), EVENT + 1);
    assert.equal(at(1_900_000_000), 1_900_000_000);
    assert.equal(at(4_294_967_295), 4_294_967_295);
  });

  test('BIGINT columns given as bigint or numeric strings are accepted', () => {
    const op = ok(decode(setRow({ ns_id: 7n, expire: 100n })));
    assert.equal(op.nsId, 7);
    assert.equal(op.kind === 'set' && op.expiresAt, EVENT + 100);
    const op2 = ok(decode(setRow({ ns_id: '9', expire: '60' })));
    assert.equal(op2.nsId, 9);
    assert.equal(op2.kind === 'set' && op2.expiresAt, EVENT + 60);
  });

  test('a negative namespace id is carried through', () => {
    assert.equal(ok(decode(setRow({ ns_id: -3 }))).nsId, -3);
  });

  test('a delete needs neither value nor expire', () => {
    assert.deepEqual(ok(decode(deleteRow({ mc_value: null, expire: null }))), { kind: 'delete', t: T, nsId: 7, key: Buffer.from('user:1') });
  });

  test('a flush marker carries its flush id and token (in mc_value) and needs no key', () => {
    assert.deepEqual(ok(decode(flushRow())), { kind: 'flush', t: T, nsId: 7, flushId: 5, token: '' });
    assert.deepEqual(ok(decode(flushRow({ flush_id: 123n, mc_value: Buffer.from('0b7c8a52-aaaa-bbbb-cccc-0242ac120002') }))), {
      kind: 'flush',
      t: T,
      nsId: 7,
      flushId: 123,
      token: '0b7c8a52-aaaa-bbbb-cccc-0242ac120002',
    });
  });

  test('an empty problem string is not a problem', () => {
    assert.equal(ok(decode(setRow({ problem: '' }))).kind, 'set');
  });

  test('binary keys with bytes 0x80-0xff are fine', () => {
    const key = Buffer.from([0x80, 0xff, 0x41]);
    const op = ok(decode(setRow({ mc_key: key })));
    assert.ok(op.kind === 'set' && op.key.equals(key));
  });

  test('a 250-byte key is fine', () => {
    assert.equal(ok(decode(deleteRow({ mc_key: Buffer.alloc(250, 0x41) }))).kind, 'delete');
  });
});

describe('decodeRow: refused rows', () => {
  test('a problem set by the trigger wins over everything else, verbatim', () => {
    const d = decode(setRow({ problem: 'unknown namespace 99; create it first with create_namespace()', ns_id: 99 }));
    assert.equal(reason(d), 'unknown namespace 99; create it first with create_namespace()');
    assert.equal(reason(decode(setRow({ problem: 'from trigger', op: 'bogus', mc_key: null }))), 'from trigger');
  });

  test('an unknown op is named, quoted and cut to 32 characters', () => {
    assert.equal(reason(decode(setRow({ op: 'upsert' }))), "unknown op 'upsert'; expected set, delete or flush");
    assert.equal(reason(decode(setRow({ op: 'x'.repeat(40) }))), `unknown op '${'x'.repeat(32)}'; expected set, delete or flush`);
    assert.equal(reason(decode(setRow({ op: '' }))), "unknown op ''; expected set, delete or flush");
  });

  test('a NULL op', () => {
    assert.equal(reason(decode(setRow({ op: null }))), 'unknown op NULL; expected set, delete or flush');
  });

  test('a NULL namespace, for every op', () => {
    assert.equal(reason(decode(setRow({ ns_id: null }))), 'namespace id is NULL');
    assert.equal(reason(decode(deleteRow({ ns_id: null }))), 'namespace id is NULL');
    assert.equal(reason(decode(flushRow({ ns_id: null }))), 'namespace id is NULL');
  });

  test('a flush marker without a usable flush_id', () => {
    for (const flush_id of [null, 0, -1, 0n]) {
      assert.equal(reason(decode(flushRow({ flush_id }))), 'flush marker without flush_id; use flush_namespace()', String(flush_id));
    }
  });

  test('bad keys, for set and delete alike', () => {
    for (const make of [setRow, deleteRow]) {
      assert.equal(reason(decode(make({ mc_key: null }))), 'key is NULL');
      assert.equal(reason(decode(make({ mc_key: Buffer.alloc(0) }))), 'key is empty');
      assert.equal(reason(decode(make({ mc_key: '' }))), 'key is empty');
      assert.equal(reason(decode(make({ mc_key: Buffer.alloc(251, 0x41) }))), 'key is 251 bytes; memcached keys are at most 250 bytes');
      assert.equal(reason(decode(make({ mc_key: 'é'.repeat(126) }))), 'key is 252 bytes; memcached keys are at most 250 bytes');
      assert.equal(reason(decode(make({ mc_key: 'a b' }))), `key has a space at byte 2${KEY_TAIL}`);
      assert.equal(reason(decode(make({ mc_key: Buffer.from([0x61, 0x00]) }))), `key has control byte 0x00 at byte 2${KEY_TAIL}`);
      assert.equal(reason(decode(make({ mc_key: 'x\x7f' }))), `key has control byte 0x7F at byte 2${KEY_TAIL}`);
    }
  });

  test('a NULL value in a set', () => {
    assert.equal(reason(decode(setRow({ mc_value: null }))), 'value is NULL; use delete_key() to remove a key');
  });

  test('a NULL expire in a set', () => {
    assert.equal(reason(decode(setRow({ expire: null }))), 'expire is NULL; use 0 for no expiry');
  });

  test('a negative expire', () => {
    assert.equal(reason(decode(setRow({ expire: -1 }))), 'expire is -1; use 0 (never), seconds up to 2592000, or a unix timestamp');
    assert.equal(reason(decode(setRow({ expire: -100n }))), 'expire is -100; use 0 (never), seconds up to 2592000, or a unix timestamp');
  });

  test('an expire beyond 32-bit unix time', () => {
    assert.equal(reason(decode(setRow({ expire: 4_294_967_296 }))), 'expire 4294967296 is beyond the 32-bit unix time memcached accepts');
    assert.match(reason(decode(setRow({ expire: 9_223_372_036_854_775_807n }))), /^expire 9\d{18} is beyond the 32-bit unix time memcached accepts$/);
  });

  test('an expire above 30 days that is a unix time at or before the statement time: refused naming the rule, the key deleted instead', () => {
    const rule = (expire: number, utc: string) =>
      `expire ${expire} is above 2592000 (30 days), so memcached reads it as a unix time, and that time (${utc} UTC) has already passed; give seconds up to 2592000 or a future unix time`;
    // 40 days meant as seconds: 1970-02-10 to memcached.
    const d = decode(setRow({ expire: 3_456_000 }));
    assert.equal(reason(d), rule(3_456_000, '1970-02-10 00:00:00'));
    assert.ok(!d.ok && d.instead, 'a delete of the key instead');
    assert.deepEqual(!d.ok && d.instead, { kind: 'delete', t: T, nsId: 7, key: Buffer.from('user:1') });
    assert.equal(reason(decode(setRow({ expire: 2_592_001 }))), rule(2_592_001, '1970-01-31 00:00:01'));
    assert.equal(reason(decode(setRow({ expire: 3_456_000n }))), rule(3_456_000, '1970-02-10 00:00:00'));
    assert.equal(reason(decode(setRow({ expire: '3456000' }))), rule(3_456_000, '1970-02-10 00:00:00'));
    // The statement's time itself is already too late (memcached expires an item at its exptime);
    // one second later is fine.
    assert.equal(reason(decode(setRow({ expire: EVENT }))), rule(EVENT, '2023-11-14 22:13:20'));
    assert.equal(reason(decode(setRow({ expire: EVENT - 3_600 }))), rule(EVENT - 3_600, '2023-11-14 21:13:20'));
    assert.equal(ok(decode(setRow({ expire: EVENT + 1 }))).kind, 'set');
  });

  test('the past-expiry check uses the event time from the binlog, not the clock: a replay decides the same', () => {
    const row = setRow({ expire: 1_000_000_100 });
    // Committed before that time: a set, however late it is decoded.
    assert.deepEqual(ok(decodeRow(row, T, 1_000_000_000, LIMITS)), { kind: 'set', t: T, nsId: 7, key: Buffer.from('user:1'), value: Buffer.from('hello'), expiresAt: 1_000_000_100 });
    assert.equal(ok(decodeRow(row, T, 1_000_000_099, LIMITS)).kind, 'set');
    // Committed at or after it: refused.
    assert.match(reason(decodeRow(row, T, 1_000_000_100, LIMITS)), /^expire 1000000100 is above 2592000 \(30 days\)/);
    assert.match(reason(decodeRow(row, T, 1_000_000_101, LIMITS)), /\(2001-09-09 01:48:20 UTC\) has already passed/);
  });

  test('pastExpiryProblem: never for 0 or relative seconds, whatever the event time', () => {
    for (const expire of [0, 1, 100, 2_592_000]) assert.equal(pastExpiryProblem(expire, 4_000_000_000), undefined, String(expire));
    assert.equal(pastExpiryProblem(2_592_001, 2_592_000), undefined);
    assert.match(pastExpiryProblem(2_592_001, 2_592_001) ?? '', /^expire 2592001 is above 2592000/);
    assert.match(pastExpiryProblem(4_294_967_295, 4_294_967_295) ?? '', /\(2106-02-07 06:28:15 UTC\)/);
  });

  test('the past-expiry check comes after the NULL, negative and 32-bit checks, before the size check', () => {
    assert.match(reason(decode(setRow({ expire: 4_294_967_296 }))), /beyond the 32-bit/);
    assert.match(reason(decode(setRow({ expire: 3_456_000, mc_value: Buffer.alloc(2_000) }), { maxItemBytes: 1000 })), /^expire 3456000 is above/);
  });

  test('an item too large: key + value + 64 bytes over maxItemBytes', () => {
    const limits = { maxItemBytes: 1000 };
    // key 1 byte + value 936 + 64 = 1001
    assert.equal(
      reason(decode(setRow({ mc_key: 'k', mc_value: Buffer.alloc(936) }), limits)),
      'value is 936 bytes; with its key and 64 bytes of overhead it exceeds the memcached item size of 1000 bytes (memcached.maxItemBytes)',
    );
    // The key counts too: a 10-byte key with a 927-byte value is also 1001.
    assert.match(reason(decode(setRow({ mc_key: 'k'.repeat(10), mc_value: Buffer.alloc(927) }), limits)), /^value is 927 bytes; .* 1000 bytes/);
  });

  test('an item exactly at maxItemBytes passes', () => {
    const limits = { maxItemBytes: 1000 };
    assert.equal(ok(decode(setRow({ mc_key: 'k', mc_value: Buffer.alloc(935) }), limits)).kind, 'set');
    assert.equal(ok(decode(setRow({ mc_key: 'k'.repeat(10), mc_value: Buffer.alloc(926) }), limits)).kind, 'set');
  });

  test('sizes are counted in bytes for string keys and values', () => {
    const limits = { maxItemBytes: 1000 };
    // 'éé' is 4 bytes; 466 × 'é' is 932 bytes: 4 + 932 + 64 = 1000.
    assert.equal(ok(decode(setRow({ mc_key: 'éé', mc_value: 'é'.repeat(466) }), limits)).kind, 'set');
    assert.match(reason(decode(setRow({ mc_key: 'éé', mc_value: `${'é'.repeat(466)}x` }), limits)), /^value is 933 bytes/);
  });

  test('the default 1 MiB limit', () => {
    const key = 'k';
    assert.equal(ok(decode(setRow({ mc_key: key, mc_value: Buffer.alloc(1_048_576 - 65) }))).kind, 'set');
    assert.match(reason(decode(setRow({ mc_key: key, mc_value: Buffer.alloc(1_048_576 - 64) }))), /exceeds the memcached item size of 1048576 bytes/);
  });

  test('delete and flush ignore the item size and expire checks', () => {
    const limits = { maxItemBytes: 10 };
    assert.equal(ok(decode(deleteRow({ mc_value: Buffer.alloc(100), expire: -5 }), limits)).kind, 'delete');
    assert.equal(ok(decode(deleteRow({ expire: 3_456_000 }), limits)).kind, 'delete');
    assert.equal(ok(decode(flushRow({ expire: null }), limits)).kind, 'flush');
  });

  test('a refused row carries the printable description of the row', () => {
    const row = setRow({ mc_key: Buffer.from('a\nb'), mc_value: null });
    const d = decode(row);
    assert.equal(d.ok, false);
    if (d.ok) return;
    assert.deepEqual(d.row, describeRow(row));
    assert.equal(d.row.key, '0x610a62');
  });
});

describe('describeRow', () => {
  test('shows key text and sizes, never value bytes', () => {
    const row = setRow({ mc_value: Buffer.from('secret value'), expire: 100 });
    assert.deepEqual(describeRow(row), { op: 'set', nsId: 7, key: 'user:1', keyBytes: 6, valueBytes: 12, expire: '100' });
    assert.doesNotMatch(JSON.stringify(describeRow(row)), /secret/);
  });

  test('binary keys are hex; bigints become strings so the result is JSON-serialisable', () => {
    const row = { op: 'flush', ns_id: 3, mc_key: Buffer.from([0x00, 0xff]), mc_value: null, expire: 9_000_000_000_000_000_000n, flush_id: 77n };
    const d = describeRow(row);
    assert.deepEqual(d, { op: 'flush', nsId: 3, key: '0x00ff', keyBytes: 2, valueBytes: null, expire: '9000000000000000000', flushId: '77' });
    assert.doesNotThrow(() => JSON.stringify(d));
  });

  test('flushId is present only when flush_id is set', () => {
    assert.equal('flushId' in describeRow(setRow()), false);
    assert.equal(describeRow(flushRow({ flush_id: 5 })).flushId, '5');
  });

  test('an empty row describes every field as null', () => {
    assert.deepEqual(describeRow({}), { op: null, nsId: null, key: 'undefined', keyBytes: null, valueBytes: null, expire: null });
  });

  test('a NULL key is shown as null with no byte count', () => {
    const d = describeRow(setRow({ mc_key: null }));
    assert.equal(d.key, 'null');
    assert.equal(d.keyBytes, null);
  });

  test('string keys and values are measured in bytes', () => {
    const d = describeRow(setRow({ mc_key: 'clé', mc_value: '€' }));
    assert.equal(d.key, 'clé');
    assert.equal(d.keyBytes, 4);
    assert.equal(d.valueBytes, 3);
  });

  test('the output is printable for every single-byte key', () => {
    for (let b = 0; b < 256; b++) {
      const d = describeRow(setRow({ mc_key: Buffer.from([0x61, b]) }));
      assert.equal(typeof d.key, 'string');
      // eslint-disable-next-line no-control-regex
      assert.doesNotMatch(d.key as string, /[\u0000-\u001f\u007f]/, `byte ${b}`);
      assert.equal(d.keyBytes, 2);
    }
  });

  test('NULL expire is described as null, like the other NULL columns', () => {
    assert.equal(describeRow(setRow({ expire: null })).expire, null);
  });
});

describe('a bad row with a usable key becomes a delete of that key', () => {
  test('bad value, expire, namespace or op: delete the key instead', () => {
    for (const over of [{ mc_value: null }, { expire: -1 }, { problem: 'unknown namespace 9' }, { op: 'frob' }]) {
      const d = decodeRow(setRow(over), 7, 1_000, LIMITS);
      assert.equal(d.ok, false);
      if (d.ok) continue;
      assert.ok(d.instead, JSON.stringify(over));
      assert.equal(d.instead.kind, 'delete');
      assert.equal(d.instead.t, 7);
      assert.equal(d.instead.key.toString(), String(setRow().mc_key));
    }
  });

  test('no usable key (or a flush marker): nothing instead', () => {
    for (const over of [{ mc_key: null }, { mc_key: Buffer.from('a b') }, { mc_key: Buffer.alloc(251, 0x61) }, { op: 'flush', flush_id: null }]) {
      const d = decodeRow(setRow(over), 7, 1_000, LIMITS);
      assert.equal(d.ok, false);
      if (!d.ok) assert.equal(d.instead, undefined, JSON.stringify(over));
    }
  });
});

describe('a row written after mc_storage was altered', () => {
  const SCHEMA = /^mc_storage's schema changed: /;
  const RESTORE = /; restore it as in sql\/001_tables\.sql; rows written meanwhile are dead-lettered, not applied$/;
  const without = (row: Record<string, unknown>, ...columns: string[]) => Object.fromEntries(Object.entries(row).filter(([c]) => !columns.includes(c)));

  test('an added column changes nothing, whatever it holds', () => {
    assert.deepEqual(ok(decode(setRow({ extra: 5 }))), ok(decode(setRow())));
    assert.deepEqual(ok(decode(setRow({ extra: null, note: Buffer.from('x'), at: new Date(0) }))), ok(decode(setRow())));
    assert.equal(ok(decode(flushRow({ extra: 1 }))).kind, 'flush');
  });

  test('a missing column (renamed or dropped) is named, with the columns the row has, for every op', () => {
    const d = decode(without(setRow({ cache_key: Buffer.from('user:1') }), 'mc_key'));
    assert.equal(
      reason(d),
      "mc_storage's schema changed: the row has no column mc_key (it has ns_id, mc_value, expire, op, flush_id, problem, cache_key); " +
        'restore it as in sql/001_tables.sql; rows written meanwhile are dead-lettered, not applied',
    );
    for (const column of ['ns_id', 'mc_key', 'mc_value', 'expire', 'op', 'flush_id', 'problem']) {
      for (const make of [setRow, deleteRow, flushRow]) {
        const r = reason(decode(without(make(), column)));
        assert.match(r, SCHEMA, column);
        assert.match(r, new RegExp(`has no column ${column} `), column);
      }
    }
    assert.match(reason(decode(without(setRow(), 'expire', 'problem'))), /has no columns expire, problem \(/);
    assert.match(reason(decode({})), /has no columns ns_id, mc_key, mc_value, expire, op, flush_id, problem \(it has none\)/);
  });

  test('a missing column wins over the trigger\'s problem and over the row\'s own checks', () => {
    assert.match(reason(decode(without(setRow({ problem: 'unknown namespace 9', op: 'bogus' }), 'expire'))), /has no column expire/);
  });

  test('a value its column cannot hold: the type was altered', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ mc_key: 123 }, /column mc_key holds a number \(123\) instead of bytes \(its type was altered\)/],
      [{ mc_value: 4.5 }, /column mc_value holds a number \(4\.5\) instead of bytes/],
      [{ mc_value: new Date(0) }, /column mc_value holds a date \(1970-01-01T00:00:00\.000Z\) instead of bytes/],
      [{ ns_id: 1.5 }, /column ns_id holds a number \(1\.5\) instead of an integer/],
      [{ ns_id: Buffer.from('7') }, /column ns_id holds bytes \(7\) instead of an integer/],
      [{ ns_id: 'seven' }, /column ns_id holds text \('seven'\) instead of an integer/],
      [{ expire: '' }, /column expire holds text \(''\) instead of an integer/],
      [{ expire: 2.25 }, /column expire holds a number \(2\.25\) instead of an integer/],
      [{ expire: true }, /column expire holds a boolean \(true\) instead of an integer/],
      [{ op: 1 }, /column op holds a number \(1\) instead of text/],
      [{ problem: 0 }, /column problem holds a number \(0\) instead of text/],
      [{ flush_id: { a: 1 } }, /column flush_id holds a value of type Object instead of an integer/],
    ];
    for (const [over, re] of cases) {
      const r = reason(decode(setRow(over)));
      assert.match(r, SCHEMA, JSON.stringify(over));
      assert.match(r, re);
      assert.match(r, RESTORE);
    }
  });

  test('the same for a delete and a flush marker', () => {
    assert.match(reason(decode(deleteRow({ mc_key: 123 }))), /column mc_key holds a number \(123\)/);
    assert.match(reason(decode(flushRow({ flush_id: 'x' }))), /column flush_id holds text \('x'\)/);
  });

  test('types that still decode to the same thing are fine: text keys, numeric text, bytes for text', () => {
    assert.equal(ok(decode(setRow({ mc_key: 'user:1', mc_value: 'v' }))).kind, 'set');
    assert.equal(ok(decode(setRow({ ns_id: '7', expire: '0', flush_id: '0' }))).nsId, 7);
    assert.equal(ok(decode(setRow({ ns_id: 7.0, expire: 100.0 }))).nsId, 7);
    assert.equal(ok(decode(setRow({ op: Buffer.from('delete') }))).kind, 'delete');
    assert.equal(reason(decode(setRow({ problem: Buffer.from('from the trigger') }))), 'from the trigger');
  });

  test('a row with a usable key still deletes it instead; one without does not', () => {
    const d = decode(setRow({ mc_value: 42 }));
    assert.ok(!d.ok && d.instead?.kind === 'delete' && d.instead.key.equals(Buffer.from('user:1')));
    const d2 = decode(setRow({ mc_key: 42 }));
    assert.ok(!d2.ok && d2.instead === undefined);
    const d3 = decode(without(setRow(), 'op'));
    assert.ok(!d3.ok && d3.instead?.kind === 'delete', 'a row without op was meant to change the key');
  });

  test('the dead letter describes the row in JSON-safe form', () => {
    const d = decode(setRow({ mc_key: 123, ns_id: Buffer.from([0x00, 0x07]), op: 5 }));
    assert.equal(d.ok, false);
    if (d.ok) return;
    assert.deepEqual(d.row, { op: 5, nsId: '0x0007', key: '123', keyBytes: null, valueBytes: 5, expire: '0' });
    assert.doesNotThrow(() => JSON.stringify(d.row));
  });
});
