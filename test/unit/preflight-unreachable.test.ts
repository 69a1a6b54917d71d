/** Preflight on a connection that dies: the server is unreachable (retriable), not misconfigured. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Connection } from 'mysql2/promise';
import { McreplError } from '../../src/errors.js';
import { preflight } from '../../src/source/preflight.js';

test('a connection lost during the checks is a retriable "unreachable", never a setting reported wrong', async () => {
  let calls = 0;
  const conn = {
    async query(sql: string) {
      calls++;
      // The first few answers come, then the server goes away (killed mid-check).
      if (calls <= 2) return [[{ v: /version/.test(sql) ? '10.11.19-MariaDB' : 'ON' }], []];
      throw Object.assign(new Error('Connection lost: The server closed the connection.'), { fatal: true, code: 'PROTOCOL_CONNECTION_LOST' });
    },
  } as unknown as Connection;
  await assert.rejects(preflight(conn, { database: 'memcached', serverId: 5, replica: true }), (err: unknown) => {
    assert.ok(err instanceof McreplError, String(err));
    assert.equal(err.code, 'MYSQL_UNAVAILABLE');
    assert.equal(err.retriable, true);
    assert.match(err.message, /stopped answering during the checks: Connection lost/);
    return true;
  });
});
