import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MEMCACHED_EXPIRY_MAX,
  MEMCACHED_ITEM_OVERHEAD,
  MEMCACHED_KEY_MAX,
  MEMCACHED_RELATIVE_EXPIRY_MAX,
  absoluteExpiry,
  keyProblem,
  printableKey,
} from '../../src/fanout/op.js';

const TAIL = '; memcached keys may not contain spaces or control characters';
const hex2 = (b: number) => b.toString(16).toUpperCase().padStart(2, '0');

describe('constants', () => {
  test('match memcached', () => {
    assert.equal(MEMCACHED_KEY_MAX, 250);
    assert.equal(MEMCACHED_RELATIVE_EXPIRY_MAX, 30 * 24 * 3600);
    assert.equal(MEMCACHED_EXPIRY_MAX, 2 ** 32 - 1);
    assert.equal(MEMCACHED_ITEM_OVERHEAD, 64);
  });
});

describe('keyProblem', () => {
  test('NULL and missing keys', () => {
    assert.equal(keyProblem(null), 'key is NULL');
    assert.equal(keyProblem(undefined), 'key is NULL');
  });

  test('empty key', () => {
    assert.equal(keyProblem(Buffer.alloc(0)), 'key is empty');
  });

  test('250 bytes is allowed, 251 is not', () => {
    assert.equal(keyProblem(Buffer.alloc(250, 0x61)), undefined);
    assert.equal(keyProblem(Buffer.alloc(251, 0x61)), 'key is 251 bytes; memcached keys are at most 250 bytes');
    assert.equal(keyProblem(Buffer.alloc(2048, 0x61)), 'key is 2048 bytes; memcached keys are at most 250 bytes');
    assert.equal(keyProblem(Buffer.from('a')), undefined);
  });

  test('multi-byte UTF-8 keys are measured in bytes, not characters', () => {
    const e2 = 'é'.repeat(125); // 125 chars, 250 bytes
    assert.equal(e2.length, 125);
    assert.equal(keyProblem(Buffer.from(e2)), undefined);
    const e2long = 'é'.repeat(126); // 126 chars, 252 bytes
    assert.equal(keyProblem(Buffer.from(e2long)), 'key is 252 bytes; memcached keys are at most 250 bytes');
    const euro = '€'.repeat(84); // 84 chars, 252 bytes
    assert.equal(keyProblem(Buffer.from(euro)), 'key is 252 bytes; memcached keys are at most 250 bytes');
    const emoji = '😀'.repeat(63); // 126 UTF-16 units, 252 bytes
    assert.equal(keyProblem(Buffer.from(emoji)), 'key is 252 bytes; memcached keys are at most 250 bytes');
  });

  test('a space is refused with its 1-based position', () => {
    assert.equal(keyProblem(Buffer.from('ab c')), `key has a space at byte 3${TAIL}`);
    assert.equal(keyProblem(Buffer.from(' x')), `key has a space at byte 1${TAIL}`);
    assert.equal(keyProblem(Buffer.from('x ')), `key has a space at byte 2${TAIL}`);
  });

  test('every control byte 0x00-0x1f and 0x7f is refused, naming the byte and its 1-based position', () => {
    for (const byte of [...Array.from({ length: 0x20 }, (_, i) => i), 0x7f]) {
      const key = Buffer.from([0x61, 0x62, byte, 0x63]);
      assert.equal(keyProblem(key), `key has control byte 0x${hex2(byte)} at byte 3${TAIL}`, `byte 0x${hex2(byte)}`);
    }
    // Uppercase hex, two digits.
    assert.equal(keyProblem(Buffer.from('a\nb')), `key has control byte 0x0A at byte 2${TAIL}`);
    assert.equal(keyProblem(Buffer.from([0x1f])), `key has control byte 0x1F at byte 1${TAIL}`);
    assert.equal(keyProblem(Buffer.from([0x7f])), `key has control byte 0x7F at byte 1${TAIL}`);
  });

  test('the first bad byte is the one reported', () => {
    assert.equal(keyProblem(Buffer.from('a\tb c\n')), `key has control byte 0x09 at byte 2${TAIL}`);
    assert.equal(keyProblem(Buffer.from('ab c\n')), `key has a space at byte 3${TAIL}`);
  });

  test('a bad byte at position 250 of a 250-byte key is found', () => {
    const key = Buffer.alloc(250, 0x61);
    key[249] = 0x00;
    assert.equal(keyProblem(key), `key has control byte 0x00 at byte 250${TAIL}`);
  });

  test('every printable ASCII byte 0x21-0x7e is allowed', () => {
    for (let b = 0x21; b <= 0x7e; b++) assert.equal(keyProblem(Buffer.from([b])), undefined, `byte 0x${hex2(b)}`);
    assert.equal(keyProblem(Buffer.from(Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => 0x21 + i))), undefined);
  });

  test('bytes 0x80-0xff are allowed (binary and UTF-8 keys)', () => {
    for (let b = 0x80; b <= 0xff; b++) assert.equal(keyProblem(Buffer.from([b])), undefined, `byte 0x${hex2(b)}`);
    assert.equal(keyProblem(Buffer.from(Array.from({ length: 128 }, (_, i) => 0x80 + i))), undefined);
    assert.equal(keyProblem(Buffer.from('clé:日本語')), undefined);
  });
});

describe('absoluteExpiry', () => {
  const now = 1_700_000_000;

  test('0 means never', () => {
    assert.equal(absoluteExpiry(0, now), 0);
  });

  test('up to 2592000 seconds is relative to the event time', () => {
    assert.equal(absoluteExpiry(1, now), now + 1);
    assert.equal(absoluteExpiry(100, now), now + 100);
    assert.equal(absoluteExpiry(2_592_000, now), now + 2_592_000);
  });

  test('above 2592000 it is already a unix time', () => {
    assert.equal(absoluteExpiry(2_592_001, now), 2_592_001);
    assert.equal(absoluteExpiry(1_800_000_000, now), 1_800_000_000);
    assert.equal(absoluteExpiry(MEMCACHED_EXPIRY_MAX, now), MEMCACHED_EXPIRY_MAX);
  });

  test('depends on the event time only for relative values', () => {
    assert.equal(absoluteExpiry(60, 1000), 1060);
    assert.equal(absoluteExpiry(60, 2000), 2060);
    assert.equal(absoluteExpiry(3_000_000, 1000), absoluteExpiry(3_000_000, 2000));
  });
});

describe('printableKey', () => {
  test('NULL and missing keys', () => {
    assert.equal(printableKey(null), 'null');
    assert.equal(printableKey(undefined), 'undefined');
  });

  test('valid UTF-8 text is shown as text', () => {
    assert.equal(printableKey(Buffer.from('user:42')), 'user:42');
    assert.equal(printableKey(Buffer.from('clé 日本語 😀')), 'clé 日本語 😀');
    assert.equal(printableKey(Buffer.alloc(0)), '');
  });

  test('control bytes make it hex', () => {
    assert.equal(printableKey(Buffer.from('a\nb')), '0x610a62');
    assert.equal(printableKey(Buffer.from([0x00])), '0x00');
    assert.equal(printableKey(Buffer.from([0x61, 0x7f])), '0x617f');
    assert.equal(printableKey(Buffer.from([0x1f, 0x41])), '0x1f41');
  });

  test('invalid UTF-8 makes it hex', () => {
    assert.equal(printableKey(Buffer.from([0xff, 0x61])), '0xff61');
    assert.equal(printableKey(Buffer.from([0xc3])), '0xc3'); // truncated sequence
    assert.equal(printableKey(Buffer.from([0xe9])), '0xe9'); // latin1 é
  });

  test('a literal U+FFFD is shown as hex so it cannot be confused with a decoding error', () => {
    assert.equal(printableKey(Buffer.from('a\ufffd')), '0x61efbfbd');
  });

  test('long text is cut at 300 characters with an ellipsis', () => {
    assert.equal(printableKey(Buffer.from('x'.repeat(300))), 'x'.repeat(300));
    assert.equal(printableKey(Buffer.from('x'.repeat(301))), `${'x'.repeat(300)}…`);
  });

  test('long binary keys show the first 150 bytes in hex with an ellipsis', () => {
    assert.equal(printableKey(Buffer.alloc(150, 0xff)), `0x${'ff'.repeat(150)}`);
    assert.equal(printableKey(Buffer.alloc(200, 0xff)), `0x${'ff'.repeat(150)}…`);
  });

  test('the output never contains a control character', () => {
    for (let b = 0; b < 256; b++) {
      const s = printableKey(Buffer.from([0x61, b, 0x62]));
      // eslint-disable-next-line no-control-regex
      assert.doesNotMatch(s, /[\u0000-\u001f\u007f]/, `byte ${b}`);
    }
  });
});
