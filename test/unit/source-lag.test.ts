import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serverIsBehind, transactionsBehind } from '../../src/source/source-lag.js';

test('MariaDB positions: the sequence numbers between them, per domain', () => {
  assert.equal(transactionsBehind({ gtidSet: '0-1-120' }, { gtidSet: '0-1-100' }), 20);
  assert.equal(transactionsBehind({ gtidSet: '0-1-120,1-2-7' }, { gtidSet: '0-1-120' }), 7, 'a domain the checkpoint has not seen counts whole');
  assert.equal(transactionsBehind({ gtidSet: '0-2-130' }, { gtidSet: '0-1-130' }), 0, 'a failover to another server id keeps the domain sequence');
  assert.equal(transactionsBehind({ gtidSet: '0-1-100' }, { gtidSet: '0-1-120' }), 0, 'never negative (a replica read ahead of where the primary was asked)');
});

test('MySQL GTID sets: transactions in the primary set and not in the checkpoint', () => {
  const a = '3e11fa47-71ca-11e1-9e33-c80aa9429562';
  const b = '4f22ab58-71ca-11e1-9e33-c80aa9429562';
  assert.equal(transactionsBehind({ gtidSet: `${a}:1-100` }, { gtidSet: `${a}:1-90` }), 10);
  assert.equal(transactionsBehind({ gtidSet: `${a}:1-100:105-110,${b}:1-3` }, { gtidSet: `${a}:1-100` }), 9);
  assert.equal(transactionsBehind({ gtidSet: `${a}:1-100` }, { gtidSet: `${a.toUpperCase()}:1-100` }), 0);
});

test('without GTIDs nothing can be said', () => {
  assert.equal(transactionsBehind({ file: 'b.000001', pos: 4 }, { gtidSet: '0-1-1' }), null);
  assert.equal(transactionsBehind({ gtidSet: '0-1-5' }, { file: 'b.000001', pos: 4 }), null);
});

test('a server is behind a checkpoint when it lacks transactions of the same lineage; a foreign domain is not a lag', () => {
  assert.equal(serverIsBehind({ gtidSet: '0-1-120' }, { gtidSet: '0-1-100' }), true);
  assert.equal(serverIsBehind({ gtidSet: '0-1-100' }, { gtidSet: '0-1-120' }), false, 'ahead: the binlog may have been purged, not a lag');
  assert.equal(serverIsBehind({ gtidSet: '0-1-120,7-3-5' }, { gtidSet: '0-1-100' }), false, 'domain 7 never seen there: another lineage');
  assert.equal(serverIsBehind({ file: 'b.1', pos: 4 }, { gtidSet: '0-1-1' }), false);
});
