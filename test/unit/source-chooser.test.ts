/**
 * chooseSource: when a site reading a replica reads the primary instead, and when it goes back
 * (src/source/source-chooser.ts). MariaDB positions, one domain; the bound is 1,000.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseSource, type SourceView } from '../../src/source/source-chooser.js';

const at = (seq: number) => ({ gtidSet: `0-1-${seq}` });
const view = (v: { replica?: number; primary?: number; read: number; primaryGone?: boolean }): SourceView => ({
  replica: v.replica === undefined ? undefined : at(v.replica),
  primary: v.primary === undefined ? undefined : at(v.primary),
  read: at(v.read),
  behindTransactions: 1_000,
  ...(v.primaryGone ? { primaryGone: true } : {}),
});

test('on the replica: stays while the replica is within the bound, or while the primary does not answer', () => {
  assert.equal(chooseSource('replica', view({ replica: 10_000, primary: 10_500, read: 10_000 })), 'replica');
  assert.equal(chooseSource('replica', view({ replica: 10_000, primary: 10_999, read: 10_000 })), 'replica');
  assert.equal(chooseSource('replica', view({ replica: 10_000, read: 10_000 })), 'replica', 'primary unknown (cut off too)');
});

test('on the replica: reads the primary once the replica is the bound behind and the tailer has read what it has', () => {
  assert.equal(chooseSource('replica', view({ replica: 10_000, primary: 11_000, read: 10_000 })), 'primary');
  assert.equal(chooseSource('replica', view({ replica: 10_050, primary: 50_000, read: 10_000 })), 'primary', 'a few unread transactions on the replica do not matter');
  assert.equal(chooseSource('replica', view({ primary: 50_000, read: 10_000 })), 'primary', 'the replica does not answer at all');
});

test('on the replica: stays when the tailer itself is what is behind (the replica has much it has not read)', () => {
  assert.equal(chooseSource('replica', view({ replica: 49_000, primary: 50_000, read: 10_000 })), 'replica', 'replica within the bound');
  assert.equal(chooseSource('replica', view({ replica: 30_000, primary: 50_000, read: 10_000 })), 'replica', 'replica behind, but the tailer further');
});

test('on the primary: back once the replica has everything read and is within half the bound', () => {
  assert.equal(chooseSource('primary', view({ replica: 20_000, primary: 20_100, read: 20_000 })), 'replica');
  assert.equal(chooseSource('primary', view({ replica: 20_010, primary: 20_100, read: 20_000 })), 'replica');
});

test('on the primary: stays while the replica lacks what was read, is still far behind, or does not answer', () => {
  assert.equal(chooseSource('primary', view({ replica: 19_999, primary: 20_100, read: 20_000 })), 'primary', 'one transaction short');
  assert.equal(chooseSource('primary', view({ replica: 20_000, primary: 20_700, read: 20_000 })), 'primary', 'has what was read, but 700 behind (≥ half the bound): the next look would switch again');
  assert.equal(chooseSource('primary', view({ primary: 20_100, read: 20_000 })), 'primary');
});

test('on the primary: a primary that stopped answering sends it back to a replica that has what was read', () => {
  assert.equal(chooseSource('primary', view({ replica: 20_000, read: 20_000 })), 'primary', 'one look without an answer is not a cut');
  assert.equal(chooseSource('primary', view({ replica: 20_000, read: 20_000, primaryGone: true })), 'replica');
  assert.equal(chooseSource('primary', view({ replica: 19_000, read: 20_000, primaryGone: true })), 'primary', 'the replica lacks what was read: nothing to gain');
});

test('without GTIDs nothing can be compared: it stays where it is', () => {
  const noGtid = { replica: { file: 'b.1', pos: 4 }, primary: { file: 'a.1', pos: 9 }, read: { file: 'b.1', pos: 4 }, behindTransactions: 1 };
  assert.equal(chooseSource('replica', noGtid), 'replica');
});
