/**
 * `mcrepl dead-letters retry`: writes a refused op again, once its cause is fixed (memcached's
 * item size raised, say), where the op can be rebuilt and is still the key's latest state:
 *
 * - A set: its value was kept (`deadLetters.keepValueBytes`), and the key registry still holds
 *   that value (same md5, not expired). It is written with memcached `add` on the server that
 *   refused it: a newer write that reached the server meanwhile wins.
 * - A delete: the registry holds no live value for the key. It is deleted on that server.
 * - Anything else cannot be rebuilt, and the answer says why: a row the tailer refused (the row
 *   itself is bad), a job that could not be read, a value too large to keep, or a key changed
 *   since.
 */
import { createHash } from 'node:crypto';
import type { RowDataPacket } from 'mysql2/promise';
import type { ResolvedConfig } from '../config/schema.js';
import type { DeadLetter } from '../fanout/dead-letters.js';
import { mysqlFor } from '../registry/accounts.js';
import { connectMysql } from '../registry/mysql.js';
import { toWrite } from './memcached-writer.js';
import { MetaClient } from './meta-client.js';

export type RetryOutcome = { retried: true; what: string } | { retried: false; why: string };

export async function retryDeadLetter(config: ResolvedConfig, e: DeadLetter): Promise<RetryOutcome> {
  if (e.stage === 'tailer') return { retried: false, why: `the row itself was refused (${e.reason}): correct what writes it, and write the key again` };
  const r = e.retry;
  if (!r || !e.server) return { retried: false, why: 'it holds no op to rebuild (a job that could not be read, or recorded before retries were kept)' };
  const key = Buffer.from(r.key, 'hex');
  const conn = await connectMysql(mysqlFor(config.mysql, 'admin'));
  let row: RowDataPacket | undefined;
  try {
    const [rows] = await conn.query<RowDataPacket[]>('SELECT expires_at, HEX(value_md5) AS md5 FROM mc_stored_keys WHERE mc_key = ?', [key]);
    row = rows[0];
  } finally {
    await conn.end();
  }
  const now = Date.now() / 1000;
  const live = row && (row.expires_at === null || Number(row.expires_at) > now);
  const c = new MetaClient(e.server, config.memcached.timeoutMs * 5);
  try {
    if (r.kind === 'delete') {
      if (live) return { retried: false, why: 'the key holds a value again since: nothing to delete' };
      await c.deleteKeys([key]);
      return { retried: true, what: `deleted on ${e.server}` };
    }
    if (r.value === undefined) return { retried: false, why: `its value (${r.valueBytes ?? '?'} bytes) was larger than deadLetters.keepValueBytes and was not kept: write the key again` };
    const value = Buffer.from(r.value, 'base64');
    if (!live) return { retried: false, why: 'the key was deleted or expired since: nothing to write' };
    if (createHash('md5').update(value).digest('hex') !== String(row!.md5).toLowerCase()) return { retried: false, why: 'the key holds another value since, which was applied: nothing to retry' };
    // The request a worker would send now (relative TTL when it fits, a delete once expired).
    const w = toWrite({ kind: 'set', t: 0, nsId: r.nsId, key, value, expiresAt: r.expiresAt ?? 0 }, now);
    if (w.kind === 'delete') return { retried: false, why: 'it has expired since' };
    await c.addWithTtl([{ key, value, ttl: w.exptime }]);
    return { retried: true, what: `written to ${e.server}` };
  } finally {
    c.close();
  }
}
