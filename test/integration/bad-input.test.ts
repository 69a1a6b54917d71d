/**
 * Bad input: each bad operation is refused by the procedures with a message that names the
 * problem; the same row inserted directly into the storage table is dead-lettered with its
 * reason, and the good rows around it are replicated. Then: ALTER TABLE mc_storage while the
 * pipeline runs.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { RowDataPacket } from 'mysql2/promise';
import type { DeadLetter } from '../../src/fanout/dead-letters.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { keyProblem, MEMCACHED_ITEM_OVERHEAD, printableKey } from '../../src/fanout/op.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { connectMysql } from '../../src/registry/mysql.js';
import type { Tailer } from '../../src/source/tailer.js';
import { TestEnv } from '../helpers/env.js';
import { waitFor } from '../helpers/wait-for.js';

let env: TestEnv;
let tailer: Tailer;
// The cases need the env's key prefix, but node:test collects tests before `before` runs.
env = new TestEnv();
before(async () => {
  await env.setup();
  ({ tailer } = await env.startPipeline());
  await env.sql.query("CALL create_namespace(1, 'bad')");
});
after(async () => env?.teardown());

const MAX_ITEM = 1_048_576;
const KEY_TAIL = '; memcached keys may not contain spaces or control characters$';
const P = env.prefix;

type Bytes = Buffer | string;

/** A row as inserted directly into mc_storage. */
interface Row {
  nsId: number | null;
  key: Bytes | null;
  value: Bytes | null;
  expire: number | null;
  op: string | null;
  flushId?: number | null;
}

/** A path a case cannot take, and why: kept in the table, never skipped silently. */
interface NotApplicable {
  notApplicable: string;
}

interface BadCase {
  name: string;
  /** The problem, as both the procedure's SIGNAL message and the dead letter's reason name it. */
  message: RegExp;
  /** Through a procedure: refused with SQLSTATE 45000 and `message`, nothing written. */
  call: { sql: string; args: unknown[] } | NotApplicable;
  /** Inserted directly between two good rows (one statement): dead-lettered with `message`. */
  insert: Row | NotApplicable;
}

const na = <T extends object>(p: T | NotApplicable): p is NotApplicable => 'notApplicable' in p;

const setKey = (name: string, nsId: number | null, key: Bytes | null, value: Bytes | null, expire: number | null, message: RegExp): BadCase => ({
  name: `set: ${name}`,
  message,
  call: { sql: 'CALL set_key(?, ?, ?, ?)', args: [nsId, key, value, expire] },
  insert: { nsId, key, value, expire, op: 'set' },
});

const deleteKey = (name: string, nsId: number | null, key: Bytes | null, message: RegExp): BadCase => ({
  name: `delete: ${name}`,
  message,
  call: { sql: 'CALL delete_key(?, ?)', args: [nsId, key] },
  insert: { nsId, key, value: null, expire: 0, op: 'delete' },
});

const OP_WHY = 'the procedures write the op themselves; only a direct INSERT can carry another';
const insertOnly = (name: string, row: Row, message: RegExp, why = OP_WHY): BadCase => ({ name: `INSERT: ${name}`, message, call: { notApplicable: why }, insert: row });

const NS_WHY = 'the application account may only INSERT into mc_storage; namespaces are made by create_namespace()';
const FLUSH_WHY = 'a flush is not a row: flush_namespace() writes the deletes and the marker itself';
const callOnly = (name: string, sql: string, args: unknown[], message: RegExp, why: string): BadCase => ({ name, message, call: { sql, args }, insert: { notApplicable: why } });

/** Bytes of a key or value as the server receives it. */
const bytes = (v: Bytes): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8'));
const space = (at: number) => new RegExp(`^key has a space at byte ${at}${KEY_TAIL}`);
const control = (hex: string, at: number) => new RegExp(`^key has control byte 0x${hex} at byte ${at}${KEY_TAIL}`);
const longKey = (n: number) => new RegExp(`^key is ${n} bytes; memcached keys are at most 250 bytes$`);
const unknownNs = (id: number | string) => new RegExp(`^unknown namespace ${id}; create it first with create_namespace\\(\\)$`);
const unknownOp = (quoted: string) => new RegExp(`^unknown op ${quoted}; expected set, delete or flush$`);
const tooBig = (valueBytes: number) => new RegExp(`^value is ${valueBytes} bytes; with its key and 64 bytes of overhead it exceeds the memcached item size of ${MAX_ITEM} bytes`);

// Keys of exactly n bytes whose characters are fewer than 250: multi-byte UTF-8 and emoji.
const cyrillic = 'ключ'.repeat(32); // 128 characters, 256 bytes
const cjk = '日本語'.repeat(28); // 84 characters, 252 bytes
const emoji = '😀'.repeat(63); // 63 characters (code points), 252 bytes
const binary251 = Buffer.from(Array.from({ length: 251 }, (_, i) => 0x80 + (i % 128))); // not UTF-8
/** The refusal of an `expire` above 30 days that is a unix time already past, with its time in UTC. */
const pastExpire = (expire: number) =>
  new RegExp(
    `^expire ${expire} is above 2592000 \\(30 days\\), so memcached reads it as a unix time, and that time \\(${utcText(expire)} UTC\\) has already passed; give seconds up to 2592000 or a future unix time$`,
  );
const utcText = (unixSec: number) => new Date(unixSec * 1000).toISOString().slice(0, 19).replace('T', ' ');
const anHourAgo = Math.floor(Date.now() / 1000) - 3_600;
const edgeKey = `${P}:edge`;
const edgeValue = MAX_ITEM - MEMCACHED_ITEM_OVERHEAD - Buffer.byteLength(edgeKey) + 1; // one byte over

const cases: BadCase[] = [
  // Keys too long, in bytes.
  setKey('ASCII key of 251 bytes', 1, 'k'.repeat(251), 'v', 0, longKey(251)),
  setKey('UTF-8 key of 128 characters, 256 bytes (2-byte Cyrillic)', 1, cyrillic, 'v', 0, longKey(256)),
  setKey('UTF-8 key of 84 characters, 252 bytes (3-byte CJK)', 1, cjk, 'v', 0, longKey(252)),
  setKey('emoji key of 63 characters, 252 bytes (4-byte UTF-8)', 1, emoji, 'v', 0, longKey(252)),
  setKey('binary key of 251 bytes (not UTF-8)', 1, binary251, 'v', 0, longKey(251)),
  setKey('key of 2048 bytes (the column width)', 1, 'x'.repeat(2048), 'v', 0, longKey(2048)),
  // Spaces.
  setKey('space at the start of the key', 1, ` ${P}:sp`, 'v', 0, space(1)),
  setKey('space in the middle of the key', 1, `${P}: sp`, 'v', 0, space(P.length + 2)),
  setKey('space at the end of the key', 1, `${P}:sp `, 'v', 0, space(P.length + 4)),
  // Control characters.
  setKey('tab at the start of the key', 1, `\t${P}:tab`, 'v', 0, control('09', 1)),
  setKey('tab in the middle of the key', 1, `${P}:\ttab`, 'v', 0, control('09', P.length + 2)),
  setKey('newline in the middle of the key', 1, `${P}:\nnl`, 'v', 0, control('0A', P.length + 2)),
  setKey('newline at the end of the key', 1, `${P}:nl\n`, 'v', 0, control('0A', P.length + 4)),
  setKey('CR at the end of the key', 1, `${P}:cr\r`, 'v', 0, control('0D', P.length + 4)),
  setKey('CRLF in the middle of the key (CR named first)', 1, `${P}:\r\ncrlf`, 'v', 0, control('0D', P.length + 2)),
  setKey('DEL (0x7f) at the start of the key', 1, `\x7f${P}:del`, 'v', 0, control('7F', 1)),
  setKey('DEL (0x7f) in the middle of the key', 1, `${P}:\x7fdel`, 'v', 0, control('7F', P.length + 2)),
  setKey('ESC (0x1b) at the start of the key', 1, `\x1b[0m${P}`, 'v', 0, control('1B', 1)),
  setKey('vertical tab (0x0b) in the middle of the key', 1, `${P}:\x0bvt`, 'v', 0, control('0B', P.length + 2)),
  setKey('unit separator (0x1f) at the end of the key', 1, `${P}:us\x1f`, 'v', 0, control('1F', P.length + 4)),
  setKey('NUL at the start of the key', 1, Buffer.concat([Buffer.from([0]), Buffer.from(`${P}:nul`)]), 'v', 0, control('00', 1)),
  setKey('NUL in the middle of the key', 1, Buffer.from([0x61, 0x00, 0x62]), 'v', 0, control('00', 2)),
  setKey('NUL at the end of the key (a C string)', 1, Buffer.concat([Buffer.from(`${P}:nul`), Buffer.from([0])]), 'v', 0, control('00', P.length + 5)),
  setKey('binary key with a control byte (not UTF-8)', 1, Buffer.from([0xff, 0xfe, 0x01, 0x80]), 'v', 0, control('01', 3)),
  // No key.
  setKey('empty key', 1, '', 'v', 0, /^key is empty$/),
  setKey('NULL key', 1, null, 'v', 0, /^key is NULL$/),
  // Namespaces.
  setKey('NULL namespace', null, `${P}:nullns`, 'v', 0, /^namespace id is NULL$/),
  setKey('unknown namespace', 99, `${P}:nons`, 'v', 0, unknownNs(99)),
  setKey('namespace 0', 0, `${P}:ns0`, 'v', 0, unknownNs(0)),
  setKey('negative namespace', -7, `${P}:nsneg`, 'v', 0, unknownNs(-7)),
  // Values.
  setKey('NULL value', 1, `${P}:nullvalue`, null, 0, /^value is NULL; use delete_key\(\) to remove a key$/),
  setKey('value of 1 MiB + 1 byte', 1, `${P}:huge`, Buffer.alloc(MAX_ITEM + 1, 0x61), 0, tooBig(MAX_ITEM + 1)),
  setKey('key + value + 64 bytes of overhead one byte over 1 MiB', 1, edgeKey, Buffer.alloc(edgeValue, 0x62), 0, tooBig(edgeValue)),
  // Expiry.
  setKey('negative expire', 1, `${P}:neg`, 'v', -5, /^expire is -5; use 0 \(never\), seconds up to 2592000, or a unix timestamp$/),
  setKey('expire -1 ("never" elsewhere)', 1, `${P}:neg1`, 'v', -1, /^expire is -1; /),
  setKey('expire 2^32, just beyond 32-bit unix time', 1, `${P}:exp32`, 'v', 2 ** 32, /^expire 4294967296 is beyond the 32-bit unix time memcached accepts$/),
  setKey('expire 2^40, absurd', 1, `${P}:exp40`, 'v', 2 ** 40, /^expire 1099511627776 is beyond the 32-bit unix time memcached accepts$/),
  setKey('NULL expire', 1, `${P}:nullexp`, 'v', null, /^expire is NULL; use 0 for no expiry$/),
  // Above 30 days memcached reads expire as a unix time: one already past would never appear.
  setKey('expire 3456000: 40 days meant as seconds, a unix time in 1970', 1, `${P}:exp40d`, 'v', 3_456_000, pastExpire(3_456_000)),
  setKey('expire 2592001: one second over 30 days, a unix time in 1970', 1, `${P}:exp30d1`, 'v', 2_592_001, pastExpire(2_592_001)),
  setKey('expire a unix time an hour ago', 1, `${P}:exphourago`, 'v', anHourAgo, pastExpire(anHourAgo)),
  // Deletes with bad keys or namespaces.
  deleteKey('ASCII key of 251 bytes', 1, 'd'.repeat(251), longKey(251)),
  deleteKey('emoji key of 252 bytes', 1, emoji, longKey(252)),
  deleteKey('space in the key', 1, `${P}:del space`, space(P.length + 5)),
  deleteKey('newline at the end of the key', 1, `${P}:del\n`, control('0A', P.length + 5)),
  deleteKey('NUL in the key', 1, Buffer.from([0x64, 0x00]), control('00', 2)),
  deleteKey('empty key', 1, '', /^key is empty$/),
  deleteKey('NULL key', 1, null, /^key is NULL$/),
  deleteKey('NULL namespace', null, `${P}:delnullns`, /^namespace id is NULL$/),
  deleteKey('unknown namespace', 99, `${P}:delnons`, unknownNs(99)),
  // Ops: only a direct INSERT can name one.
  insertOnly("unknown op 'upsert'", { nsId: 1, key: `${P}:upsert`, value: 'v', expire: 0, op: 'upsert' }, unknownOp("'upsert'")),
  insertOnly('NULL op', { nsId: 1, key: `${P}:nullop`, value: 'v', expire: 0, op: null }, unknownOp('NULL')),
  insertOnly('empty op', { nsId: 1, key: `${P}:emptyop`, value: 'v', expire: 0, op: '' }, unknownOp("''")),
  insertOnly("near miss 'sets'", { nsId: 1, key: `${P}:sets`, value: 'v', expire: 0, op: 'sets' }, unknownOp("'sets'")),
  insertOnly("near miss 'del'", { nsId: 1, key: `${P}:del`, value: null, expire: 0, op: 'del' }, unknownOp("'del'")),
  insertOnly("near miss ' delete' (leading space)", { nsId: 1, key: `${P}:spdel`, value: null, expire: 0, op: ' delete' }, unknownOp("' delete'")),
  insertOnly("near miss 'set\\t' (trailing tab)", { nsId: 1, key: `${P}:settab`, value: 'v', expire: 0, op: 'set\t' }, unknownOp("'set\t'")),
  insertOnly("near miss 'set\\0' (trailing NUL)", { nsId: 1, key: `${P}:setnul`, value: 'v', expire: 0, op: 'set\0' }, unknownOp("'set\\\\0'")),
  insertOnly("near miss 'ＳＥＴ' (full-width, not lower-cased to set)", { nsId: 1, key: `${P}:fullwidth`, value: 'v', expire: 0, op: 'ＳＥＴ' }, unknownOp("'ｓｅｔ'")),
  // Flush markers written by hand.
  insertOnly('flush marker without flush_id', { nsId: 1, key: null, value: null, expire: 0, op: 'flush', flushId: null }, /^flush marker without flush_id; use flush_namespace\(\)$/, FLUSH_WHY),
  insertOnly('flush marker with flush_id 0 (refused by the tailer itself)', { nsId: 1, key: null, value: null, expire: 0, op: 'flush', flushId: 0 }, /^flush marker without flush_id; use flush_namespace\(\)$/, FLUSH_WHY),
  insertOnly('flush marker with a NULL namespace', { nsId: null, key: null, value: null, expire: 0, op: 'flush', flushId: 5 }, /^namespace id is NULL$/, FLUSH_WHY),
  // Procedures without a row of their own.
  callOnly('flush_namespace: unknown namespace', 'CALL flush_namespace(?)', [99], /^unknown namespace 99$/, FLUSH_WHY),
  callOnly('flush_namespace: NULL namespace', 'CALL flush_namespace(?)', [null], /^unknown namespace NULL$/, FLUSH_WHY),
  callOnly('flush_namespace_by_name: unknown name', 'CALL flush_namespace_by_name(?)', ['no such namespace'], /^unknown namespace 'no such namespace'$/, FLUSH_WHY),
  callOnly('flush_namespace_by_name: NULL name', 'CALL flush_namespace_by_name(?)', [null], /^unknown namespace NULL$/, FLUSH_WHY),
  callOnly('create_namespace: empty name', 'CALL create_namespace(?, ?)', [null, ''], /^namespace name is empty$/, NS_WHY),
  callOnly('create_namespace: NULL name', 'CALL create_namespace(?, ?)', [null, null], /^namespace name is empty$/, NS_WHY),
  callOnly('create_namespace: id 0 (AUTO_INCREMENT would pick another)', 'CALL create_namespace(?, ?)', [0, `${P}-zero`], /^ns_id 0 is not positive; pass a positive ns_id, or NULL to pick one$/, NS_WHY),
  callOnly('create_namespace: negative id', 'CALL create_namespace(?, ?)', [-3, `${P}-neg`], /^ns_id -3 is not positive; /, NS_WHY),
  callOnly('create_namespace: name taken by another id', 'CALL create_namespace(?, ?)', [2, 'bad'], /^namespace name 'bad' already belongs to ns_id 1$/, NS_WHY),
  callOnly('create_namespace: id taken by another name', 'CALL create_namespace(?, ?)', [1, 'other'], /^ns_id 1 already belongs to namespace 'bad'$/, NS_WHY),
];

async function deadLetters(): Promise<DeadLetter[]> {
  const raw = await env.redis.lrange(new RedisKeys(env.prefix).deadLetters, 0, -1);
  return raw.map((r) => JSON.parse(r) as DeadLetter);
}

async function deadLetterCount(): Promise<number> {
  return Number((await env.redis.get(new RedisKeys(env.prefix).deadLetterCount)) ?? 0);
}

async function registered(key: Bytes): Promise<boolean> {
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [key]);
  return Number(rows[0]!.n) > 0;
}

const replicated = async (key: string, value: string | null) => (await env.readEverywhere(key)).every((v) => (value === null ? v === null : v?.toString() === value));

async function waitReplicated(key: string, value: string | null, message = key): Promise<void> {
  await waitFor(() => replicated(key, value), { message });
}

test('the table: at least 30 distinct bad inputs, each through at least one path, a reason for any path it skips', () => {
  assert.ok(cases.length >= 30, `${cases.length} cases`);
  assert.equal(new Set(cases.map((c) => c.name)).size, cases.length, 'names are distinct');
  // Buffers by their digest: two inputs differ by their bytes.
  const fp = (v: unknown) => (Buffer.isBuffer(v) ? `0x${createHash('sha1').update(v).digest('hex')}` : v);
  const inputs = cases.map((c) => JSON.stringify([na(c.call) ? null : [c.call.sql, c.call.args.map(fp)], na(c.insert) ? null : Object.entries(c.insert).map(([f, v]) => [f, fp(v)])]));
  assert.equal(new Set(inputs).size, cases.length, 'inputs are distinct');
  for (const c of cases) {
    assert.ok(!(na(c.call) && na(c.insert)), `${c.name}: takes no path`);
    for (const p of [c.call, c.insert]) if (na(p)) assert.ok(p.notApplicable.length > 10, `${c.name}: says why`);
  }
  assert.ok(cases.filter((c) => !na(c.call)).length >= 30, 'at least 30 through the procedures');
  assert.ok(cases.filter((c) => !na(c.insert)).length >= 30, 'at least 30 through a direct INSERT');
  // The multi-byte keys are short in characters and long in bytes.
  for (const k of [cyrillic, cjk, emoji]) {
    assert.ok([...k].length <= 250 && Buffer.byteLength(k) > 250, k.slice(0, 4));
  }
  assert.equal(Buffer.byteLength(edgeKey) + edgeValue + MEMCACHED_ITEM_OVERHEAD, MAX_ITEM + 1);
});

describe('refused by the procedures: SQLSTATE 45000 with a message naming the problem', () => {
  let dlBefore = 0;
  before(async () => {
    dlBefore = await deadLetterCount();
  });

  for (const c of cases) {
    if (na(c.call)) continue; // c.call.notApplicable says why; the table test checks there is a reason
    const call = c.call;
    test(c.name, async () => {
      await assert.rejects(env.sql.query(call.sql, call.args), (err: Error & { sqlState?: string }) => {
        assert.equal(err.sqlState, '45000', err.message);
        assert.match(err.message, c.message);
        return true;
      });
      if (!na(c.insert) && c.insert.key !== null) assert.equal(await registered(c.insert.key), false, 'nothing registered');
    });
  }

  test('nothing refused reached the binlog: a write after them all is replicated, and no dead letter appeared', async () => {
    const k = env.key('after-refusals');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'ok']);
    await waitReplicated(k, 'ok');
    assert.equal(await deadLetterCount(), dlBefore);
    const [ns] = await env.root.query<RowDataPacket[]>('SELECT ns_id, ns_name FROM mc_namespaces ORDER BY ns_id');
    assert.deepEqual(
      ns.map((r) => [r.ns_id, r.ns_name]),
      [[1, 'bad']],
      'no namespace was created by a refused create_namespace()',
    );
  });
});

describe('inserted directly: dead-lettered with the reason, good rows around it replicated', () => {
  for (const c of cases) {
    if (na(c.insert)) continue; // c.insert.notApplicable says why
    const r = c.insert;
    test(c.name, async () => {
      const goodBefore = env.key('good-before');
      const goodAfter = env.key('good-after');
      const countBefore = await deadLetterCount();
      // One statement: good row, bad row, good row.
      await env.sql.query(
        'INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire, op, flush_id) VALUES (1, ?, ?, 0, ?, NULL), (?, ?, ?, ?, ?, ?), (1, ?, ?, 0, ?, NULL)',
        [goodBefore, 'B', 'set', r.nsId, r.key, r.value, r.expire, r.op, r.flushId ?? null, goodAfter, 'A', 'set'],
      );
      await waitReplicated(goodAfter, 'A', 'the good row after it');
      assert.ok(await replicated(goodBefore, 'B'), 'the good row before it');
      const fresh = await waitFor(
        async () => {
          const n = (await deadLetterCount()) - countBefore;
          return n > 0 ? (await deadLetters()).slice(0, n) : undefined;
        },
        { message: 'the dead letter' },
      );
      assert.equal(fresh.length, 1, `one dead letter: ${JSON.stringify(fresh)}`);
      const dl = fresh[0]!;
      assert.equal(dl.stage, 'tailer');
      assert.match(dl.reason, c.message);
      assert.ok(dl.source, 'names the source transaction');
      assert.equal(dl.op.key, r.key === null ? 'null' : printableKey(bytes(r.key)), 'names the row');
      if (r.key !== null) {
        assert.equal(await registered(r.key), false, 'the bad row is not in the registry');
        // (Only for keys a text-protocol client can ask for at all.)
        if (!keyProblem(bytes(r.key))) {
          assert.deepEqual(await env.readEverywhere(r.key), [null, null, null, null], 'the bad row reached no server');
          assert.equal(dl.action, 'key deleted everywhere instead');
        }
      }
    });
  }
});

test('an item exactly at the size limit (key + value + 64 bytes = 1 MiB) is replicated', async () => {
  const k = env.key('at-limit');
  const value = Buffer.alloc(MAX_ITEM - MEMCACHED_ITEM_OVERHEAD - Buffer.byteLength(k), 0x63);
  const before = await deadLetterCount();
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, value]);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.equals(value)), { message: 'the 1 MiB item everywhere' });
  assert.equal(await deadLetterCount(), before);
});

test('a bad row for a key that has a value deletes it everywhere instead of leaving the old value', async () => {
  const k = env.key('stale-guard');
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'old'), { message: 'old value' });
  await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire) VALUES (1, ?, ?, -1)', [k, 'new']);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v === null), { message: 'the key deleted everywhere' });
  const dl = (await deadLetters()).find((d) => d.op.key === k);
  assert.match(dl!.reason, /expire is -1/);
  assert.equal(dl!.action, 'key deleted everywhere instead');
});

describe('expire above 30 days (a unix time to memcached)', () => {
  test('the refusal prints the time in UTC whatever the session time zone', async () => {
    const conn = await connectMysql(mysqlFor(env.config.mysql, 'writer'));
    try {
      for (const tz of ['+05:30', '-12:00', '+13:00', 'SYSTEM']) {
        await conn.query('SET time_zone = ?', [tz]);
        await assert.rejects(conn.query('CALL set_key(1, ?, ?, ?)', [env.key('tz'), 'v', 3_456_000]), (err: Error & { sqlState?: string }) => {
          assert.equal(err.sqlState, '45000');
          assert.match(err.message, pastExpire(3_456_000), tz);
          return true;
        });
      }
      // ...and "already passed" does not depend on it either: a unix time a minute ahead is
      // accepted from a session 13 hours ahead of UTC.
      const k = env.key('future-abs');
      await conn.query('SET time_zone = ?', ['+13:00']);
      await conn.query('CALL set_key(1, ?, ?, ?)', [k, 'soon-gone', Math.floor(Date.now() / 1000) + 60]);
      await waitReplicated(k, 'soon-gone');
      assert.equal(await registered(k), true);
    } finally {
      await conn.end();
    }
  });

  test('accepted: exactly 2592000 (30 days, relative) and a future unix time', async () => {
    const before = await deadLetterCount();
    const rel = env.key('exp-30d');
    const abs = env.key('exp-future');
    await env.sql.query('CALL set_key(1, ?, ?, 2592000)', [rel, 'r']);
    await env.sql.query('CALL set_key(1, ?, ?, ?)', [abs, 'a', Math.floor(Date.now() / 1000) + 3_600]);
    await waitReplicated(rel, 'r');
    await waitReplicated(abs, 'a');
    assert.equal(await deadLetterCount(), before);
  });

  test('a unix time that passes between the statement and its commit: valid when written, so applied, and as it has expired the key is deleted everywhere', async () => {
    // TTLs and this check count from the statement's time (its binlog event), as the SQL side
    // does: the set is not bad input; its expiry has simply passed by the time it is applied.
    const k = env.key('passes-before-commit');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
    await waitReplicated(k, 'old');
    const countBefore = await deadLetterCount();
    const expire = Math.floor(Date.now() / 1000) + 2;
    await env.sql.query('START TRANSACTION');
    try {
      // Accepted: still in the future at the statement's time.
      await env.sql.query('CALL set_key(1, ?, ?, ?)', [k, 'new', expire]);
      await waitFor(() => Date.now() / 1000 > expire + 1, { timeoutMs: 5_000, message: 'the expiry to pass' });
    } finally {
      await env.sql.query('COMMIT');
    }
    await waitReplicated(k, null, 'the key deleted everywhere (the old value does not linger)');
    const after = env.key('after-passes');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [after, 'ok']);
    await waitReplicated(after, 'ok');
    assert.equal(await deadLetterCount(), countBefore, 'not dead-lettered: it was valid when written');
    assert.equal(tailer.state, 'running');
  });
});

test('a row the trigger could not check (UPDATE-free engine aside) is still validated by the tailer: unknown op', async () => {
  const afterKey = env.key('after-unknown-op');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (1, 'x', 'frobnicate')");
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
  await waitFor(async () => (await env.readEverywhere(afterKey)).every((v) => v?.toString() === 'ok'), { message: 'good row after' });
  const dl = (await deadLetters()).find((d) => /unknown op 'frobnicate'/.test(d.reason));
  assert.ok(dl, 'dead-lettered with its reason');
});

test('rows of a two-phase XA transaction are dead-lettered, not applied; the pipeline goes on', async () => {
  const k = env.key('xa');
  const afterKey = env.key('after-xa');
  const xid = `'${env.id}-xa'`;
  await env.sql.query(`XA START ${xid}`);
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'xa-value']);
  await env.sql.query(`XA END ${xid}`);
  await env.sql.query(`XA PREPARE ${xid}`);
  await env.sql.query(`XA COMMIT ${xid}`);
  await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
  await waitFor(async () => (await env.readEverywhere(afterKey)).every((v) => v?.toString() === 'ok'), { message: 'good row after' });
  const dl = (await deadLetters()).find((d) => /two-phase XA/.test(d.reason));
  assert.ok(dl, 'dead-lettered with its reason');
  assert.equal(dl.op.key, k);
  assert.deepEqual(await env.readEverywhere(k), [null, null, null, null]);
});

test('op names are case-insensitive in a direct INSERT, and the registry agrees with memcached', async () => {
  const k = env.key('upper');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, op) VALUES (1, ?, 'up', 'SET')", [k]);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v?.toString() === 'up'), { message: 'SET applied' });
  const [rows] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k]);
  assert.equal(Number(rows[0]!.n), 1);
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (1, ?, 'Delete')", [k]);
  await waitFor(async () => (await env.readEverywhere(k)).every((v) => v === null), { message: 'Delete applied' });
  const [after] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k]);
  assert.equal(Number(after[0]!.n), 0);
  // A near miss is refused by both sides alike: not registered, dead-lettered.
  const k2 = env.key('near-miss');
  await env.sql.query("INSERT INTO mc_storage (ns_id, mc_key, mc_value, op) VALUES (1, ?, 'x', 'set ')", [k2]);
  await waitFor(async () => (await deadLetters()).some((d) => d.op.key === k2 && /unknown op 'set '/.test(d.reason)), { message: 'near miss dead-lettered' });
  const [nm] = await env.root.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE mc_key = ?', [k2]);
  assert.equal(Number(nm[0]!.n), 0);
});

describe('ALTER TABLE mc_storage while the pipeline runs', () => {
  /** DDL is the installer's business: the application account may not ALTER. */
  const alter = (spec: string) => env.root.query(`ALTER TABLE mc_storage ${spec}`);
  const SCHEMA = /^mc_storage's schema changed: /;
  const RESTORE = /; restore it as in sql\/001_tables\.sql; rows written meanwhile are dead-lettered, not applied$/;

  test('the application account may not ALTER the table', async () => {
    await assert.rejects(env.sql.query('ALTER TABLE mc_storage ADD COLUMN nope INT NULL'), /denied/);
  });

  test('a column added and dropped again under a stream of writes: every op replicated, none dead-lettered', async () => {
    const dlBefore = await deadLetterCount();
    const written: [string, string | null][] = [];
    let stop = false;
    // Writes through the procedures the whole time, each waiting for the ALTER's metadata lock.
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const k = env.key('alter-stream');
        await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, `s${i}`]);
        written.push([k, `s${i}`]);
      }
    })();
    const progress = async (n: number) => {
      const target = written.length + n;
      await waitFor(() => written.length >= target, { message: `${n} more writes` });
    };
    try {
      const gone = env.key('alter-deleted');
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [gone, 'old']);
      await progress(5);
      await alter('ADD COLUMN extra INT NULL');
      await progress(5);
      // A direct INSERT may fill the new column; a delete goes through too.
      const withExtra = env.key('alter-extra');
      await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value, extra) VALUES (1, ?, ?, 42)', [withExtra, 'x']);
      written.push([withExtra, 'x']);
      await env.sql.query('CALL delete_key(1, ?)', [gone]);
      written.push([gone, null]);
      await progress(5);
      await alter('DROP COLUMN extra');
      await progress(5);
    } finally {
      stop = true;
      await writer;
      await env.root.query('ALTER TABLE mc_storage DROP COLUMN IF EXISTS extra');
    }
    const last = env.key('alter-last');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [last, 'last']);
    await waitReplicated(last, 'last');
    for (const [k, v] of written) assert.ok(await replicated(k, v), `${k} = ${v} everywhere`);
    assert.ok(written.length >= 20, `${written.length} writes`);
    assert.equal(await deadLetterCount(), dlBefore, 'nothing dead-lettered');
    assert.equal(tailer.state, 'running');
  });

  test('ALTERs the tailer reads only later (it was stopped): each row is decoded with the columns it was written with', async () => {
    const dlBefore = await deadLetterCount();
    await tailer.close();
    const rows: [string, string][] = [];
    const set = async (label: string, sql = 'CALL set_key(1, ?, ?, 0)') => {
      const k = env.key(label);
      await env.sql.query(sql, [k, label]);
      rows.push([k, label]);
    };
    try {
      await set('lag-before');
      // A column in front shifts every position: read by today's columns, old rows would be garbage.
      await alter('ADD COLUMN extra INT NULL FIRST');
      await set('lag-extra-first', 'INSERT INTO mc_storage (extra, ns_id, mc_key, mc_value) VALUES (7, 1, ?, ?)');
      await alter('DROP COLUMN extra');
      await set('lag-dropped');
      await alter('ADD COLUMN created TIMESTAMP NULL DEFAULT NULL');
      await set('lag-timestamp');
      await alter('DROP COLUMN created');
      await set('lag-after');
    } finally {
      await env.root.query('ALTER TABLE mc_storage DROP COLUMN IF EXISTS extra, DROP COLUMN IF EXISTS created');
      tailer = await env.startTailer();
    }
    await waitReplicated(rows.at(-1)![0], rows.at(-1)![1]);
    for (const [k, v] of rows) assert.ok(await replicated(k, v), `${k} = ${v} everywhere`);
    assert.equal(await deadLetterCount(), dlBefore, 'nothing dead-lettered');
  });

  test('mc_key renamed: MySQL refuses every write (the trigger names the column) until it is renamed back; then writes replicate', async () => {
    const dlBefore = await deadLetterCount();
    const k = env.key('renamed');
    await alter('CHANGE mc_key cache_key VARBINARY(2048) NULL');
    try {
      await assert.rejects(env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'v']), /Unknown column 'mc_key'/);
      await assert.rejects(env.sql.query('CALL delete_key(1, ?)', [k]), /Unknown column 'mc_key'/);
      await assert.rejects(env.sql.query('INSERT INTO mc_storage (ns_id, cache_key, mc_value) VALUES (1, ?, ?)', [k, 'v']), /Unknown column 'mc_key'/);
    } finally {
      await alter('CHANGE cache_key mc_key VARBINARY(2048) NULL');
    }
    const afterKey = env.key('after-rename');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
    await waitReplicated(afterKey, 'ok');
    assert.deepEqual(await env.readEverywhere(k), [null, null, null, null]);
    assert.equal(await registered(k), false);
    assert.equal(await deadLetterCount(), dlBefore);
    assert.equal(tailer.state, 'running');
  });

  test('mc_key changed to BIGINT: rows it cannot decode are dead-lettered naming the change; the pipeline goes on; rows after the restore replicate', async () => {
    const dlBefore = await deadLetterCount();
    const before = env.key('before-bigint');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [before, 'b']);
    await waitReplicated(before, 'b');
    const n = Date.now() * 1000 + Math.floor(Math.random() * 1000);
    const numeric = [n, n + 1, n + 2];
    await alter('MODIFY mc_key BIGINT NULL');
    try {
      // A key MySQL can turn into a number gets in (through a direct INSERT and the procedure)...
      await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, ?, ?), (1, ?, ?)', [numeric[0], 'x', numeric[1], 'y']);
      await env.sql.query('CALL set_key(1, ?, ?, 0)', [String(numeric[2]), 'z']);
      // ...any other is refused by MySQL itself.
      await assert.rejects(env.sql.query('CALL set_key(1, ?, ?, 0)', [env.key('text'), 'v']), /Incorrect integer value.*mc_key/);
    } finally {
      await alter('MODIFY mc_key VARBINARY(2048) NULL');
    }
    const afterKey = env.key('after-bigint');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
    await waitReplicated(afterKey, 'ok');
    const fresh = await waitFor(
      async () => {
        const c = (await deadLetterCount()) - dlBefore;
        return c >= 3 ? (await deadLetters()).slice(0, c) : undefined;
      },
      { message: 'three dead letters' },
    );
    assert.equal(fresh.length, 3, JSON.stringify(fresh));
    assert.deepEqual(fresh.map((d) => d.op.key).sort(), numeric.map(String).sort(), 'one per row, naming its key');
    for (const d of fresh) {
      assert.equal(d.stage, 'tailer');
      assert.match(d.reason, SCHEMA);
      assert.match(d.reason, new RegExp(`column mc_key holds a number \\(${d.op.key}\\) instead of bytes \\(its type was altered\\)`));
      assert.match(d.reason, RESTORE);
    }
    for (const k of numeric) assert.deepEqual(await env.readEverywhere(String(k)), [null, null, null, null]);
    assert.ok(await replicated(before, 'b'));
    assert.equal(tailer.state, 'running');
  });

  test('mc_value changed to INT: the row is dead-lettered naming the change, and its key deleted everywhere rather than left stale', async () => {
    const dlBefore = await deadLetterCount();
    const k = env.key('int-value');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'old']);
    await waitReplicated(k, 'old');
    await alter('MODIFY mc_value INT NULL');
    try {
      await env.sql.query('INSERT INTO mc_storage (ns_id, mc_key, mc_value) VALUES (1, ?, 5)', [k]);
    } finally {
      await alter('MODIFY mc_value LONGBLOB NULL');
    }
    await waitReplicated(k, null, 'the key deleted everywhere');
    const dl = await waitFor(async () => ((await deadLetterCount()) > dlBefore ? (await deadLetters())[0] : undefined), { message: 'the dead letter' });
    assert.equal(dl.op.key, k);
    assert.match(dl.reason, /^mc_storage's schema changed: column mc_value holds a number \(5\) instead of bytes \(its type was altered\)/);
    assert.equal(dl.action, 'key deleted everywhere instead');
    const afterKey = env.key('after-int-value');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [afterKey, 'ok']);
    await waitReplicated(afterKey, 'ok');
    await env.sql.query('CALL set_key(1, ?, ?, 0)', [k, 'new']);
    await waitReplicated(k, 'new');
    assert.equal(await deadLetterCount(), dlBefore + 1);
    assert.equal(tailer.state, 'running');
  });
});
