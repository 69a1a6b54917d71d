import assert from 'node:assert/strict';
import { test } from 'node:test';
import { filtersDropping } from '../../src/source/preflight.js';

test('replication filters that drop the storage table are named; others are not', () => {
  assert.deepEqual(filtersDropping({}, 'memcached', 'mc_storage'), []);
  assert.deepEqual(filtersDropping({ doDb: 'memcached,app' }, 'memcached', 'mc_storage'), []);
  assert.match(filtersDropping({ doDb: 'app' }, 'memcached', 'mc_storage')[0]!, /replicate_do_db \(app\) leaves `memcached` out/);
  assert.match(filtersDropping({ ignoreDb: 'x,memcached' }, 'memcached', 'mc_storage')[0]!, /replicate_ignore_db lists `memcached`/);
  assert.deepEqual(filtersDropping({ doTable: 'memcached.mc_storage,memcached.mc_stored_keys' }, 'memcached', 'mc_storage'), []);
  assert.match(filtersDropping({ doTable: 'memcached.mc_stored_keys' }, 'memcached', 'mc_storage')[0]!, /leave memcached.mc_storage out/);
  assert.deepEqual(filtersDropping({ wildDoTable: 'memcached.%' }, 'memcached', 'mc_storage'), [], 'a wild do-table that matches keeps it');
  assert.match(filtersDropping({ ignoreTable: 'memcached.mc_storage' }, 'memcached', 'mc_storage')[0]!, /replicate_ignore_table lists/);
  assert.match(filtersDropping({ wildIgnoreTable: 'mem%.mc\\_%' }, 'memcached', 'mc_storage')[0]!, /replicate_wild_ignore_table \(mem%\.mc\\_%\) matches/);
  assert.deepEqual(filtersDropping({ wildIgnoreTable: 'other.%' }, 'memcached', 'mc_storage'), []);
});
