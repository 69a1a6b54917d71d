/**
 * Where the binlog ends right now, read in one statement so that the starting point and the
 * transactions streamed after it can neither overlap nor leave a gap. (zongji's own
 * "start at end" reads the file position and the GTID set in two queries; a transaction that
 * commits in between would be both skipped on resume and counted once.)
 */
import type { Connection, RowDataPacket } from 'mysql2/promise';
import type { Position } from './checkpoint-store.js';

export async function currentBinlogPosition(conn: Connection): Promise<Position> {
  const [v] = await conn.query<RowDataPacket[]>('SELECT VERSION() AS v');
  const isMariaDb = /mariadb/i.test(String(v[0]?.v));
  if (isMariaDb) {
    const [r] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS pos');
    const pos = String(r[0]?.pos ?? '').trim();
    if (pos !== '') return { gtidSet: pos };
  } else {
    const [r] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_mode AS mode, @@GLOBAL.gtid_executed AS executed');
    const executed = String(r[0]?.executed ?? '').replace(/\s/g, '');
    if (String(r[0]?.mode).toUpperCase() === 'ON' && executed !== '') return { gtidSet: executed };
  }
  // No GTIDs (yet): the file and offset, from one statement. MySQL 8.4 renamed it.
  let rows: RowDataPacket[];
  try {
    [rows] = await conn.query<RowDataPacket[]>('SHOW BINARY LOG STATUS');
  } catch {
    [rows] = await conn.query<RowDataPacket[]>('SHOW MASTER STATUS');
  }
  const row = rows[0];
  if (!row) throw new Error('the server reports no binary log (is log_bin on?)');
  return { file: String(row.File), pos: Number(row.Position) };
}
