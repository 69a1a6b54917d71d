/** Namespaces and flushes, through the SQL procedures. */
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { McreplError } from '../errors.js';

export interface Namespace {
  nsId: number;
  nsName: string;
}

/** Finds a namespace by name, or by id when given digits. */
export async function resolveNamespace(conn: Connection, nameOrId: string): Promise<Namespace> {
  const byId = /^\d+$/.test(nameOrId);
  const [rows] = await conn.query<RowDataPacket[]>(
    byId ? 'SELECT ns_id, ns_name FROM mc_namespaces WHERE ns_id = ? OR ns_name = ? ORDER BY ns_name = ? DESC LIMIT 1' : 'SELECT ns_id, ns_name FROM mc_namespaces WHERE ns_name = ?',
    byId ? [Number(nameOrId), nameOrId, nameOrId] : [nameOrId],
  );
  const row = rows[0];
  if (!row) {
    const [all] = await conn.query<RowDataPacket[]>('SELECT ns_name FROM mc_namespaces ORDER BY ns_name LIMIT 20');
    const known = all.map((r) => String(r.ns_name));
    throw new McreplError('UNKNOWN_NAMESPACE', `no namespace '${nameOrId}'${known.length ? ` (known: ${known.join(', ')})` : ' (there are none yet; create one with CALL create_namespace(NULL, \'name\'))'}`);
  }
  return { nsId: Number(row.ns_id), nsName: String(row.ns_name) };
}

export interface FlushRequest {
  flushId: number;
  /** Random token of this request; with the id it names the flush in Redis. */
  token: string;
  keyCount: number;
}

/** Writes the deletes and the flush marker (CALL flush_namespace); returns the flush id. */
export async function requestFlush(conn: Connection, nsId: number): Promise<FlushRequest> {
  const [results] = await conn.query<RowDataPacket[][]>('CALL flush_namespace(?)', [nsId]);
  const row = results[0]?.[0];
  if (!row) throw new McreplError('FLUSH_FAILED', 'flush_namespace() returned no flush id');
  return { flushId: Number(row.flush_id), token: String(row.token), keyCount: Number(row.key_count) };
}
