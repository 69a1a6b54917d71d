/**
 * Installs the SQL surface (sql/*.sql, in name order) into the configured database. The files
 * use the mysql client's DELIMITER syntax so they also work with `mysql db < file`; this
 * splits them the same way.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import type { ResolvedConfig } from '../config/schema.js';
import { installAccounts } from './accounts.js';
import { splitSqlScript, sqlFiles } from './sql-files.js';

export { SQL_DIR, splitSqlScript, sqlFiles } from './sql-files.js';

/**
 * Everything `mcrepl schema install` does: the schema, the item size setting (one source of
 * truth: the procedures refuse what memcached.maxItemBytes says memcached refuses), and the
 * accounts of the configured roles.
 */
export async function installAll(conn: Connection, config: ResolvedConfig): Promise<{ files: string[]; statements: number; accounts: string[] }> {
  const r = await installSchema(conn, config.mysql.database);
  await conn.query(`REPLACE INTO mc_settings (name, value) VALUES ('max_item_bytes', ?)`, [String(config.memcached.maxItemBytes)]);
  const accounts = await installAccounts(conn, config.mysql);
  return { ...r, accounts };
}

/** Creates the database if needed and (re)installs every table, function, trigger and procedure. */
export async function installSchema(conn: Connection, database: string, opts: { dir?: string } = {}): Promise<{ files: string[]; statements: number }> {
  const ident = `\`${database.replace(/`/g, '``')}\``;
  await conn.query(`CREATE DATABASE IF NOT EXISTS ${ident} CHARACTER SET utf8mb4`);
  await conn.query(`USE ${ident}`);
  const files = sqlFiles(opts.dir);
  let statements = 0;
  for (const file of files) {
    for (const stmt of splitSqlScript(fs.readFileSync(file, 'utf8'))) {
      try {
        await conn.query(stmt);
      } catch (err) {
        throw new Error(`${path.basename(file)}: ${(err as Error).message}\n  in: ${stmt.split('\n').find((l) => l.trim() && !l.trim().startsWith('--'))?.trim()}`, { cause: err });
      }
      statements++;
    }
  }
  return { files: files.map((f) => path.basename(f)), statements };
}
