/**
 * Least privilege: one MySQL account per role, created by `mcrepl schema install` from
 * sql/accounts/<role>.sql when the role is configured (mysql.tailer / admin / writer), and
 * `mysqlFor(config, role)` to connect as it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import mysql from 'mysql2/promise';
import type { MysqlConfig, MysqlRole } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { SQL_DIR, splitSqlScript } from './sql-files.js';

export const ROLES: readonly MysqlRole[] = ['tailer', 'admin', 'writer'];

/** The connection settings of a role: its own account when configured, else mysql.user. */
export function mysqlFor(cfg: MysqlConfig, role: MysqlRole): MysqlConfig {
  const acc = cfg[role];
  if (!acc) return cfg;
  return { ...cfg, user: acc.user, password: acc.password, passwordFile: acc.passwordFile };
}

/** Creates (or updates the password of) each configured role's account and grants its rights. */
export async function installAccounts(conn: Connection, cfg: MysqlConfig): Promise<string[]> {
  const done: string[] = [];
  for (const role of ROLES) {
    const acc = cfg[role];
    if (!acc) continue;
    if (acc.password === undefined) throw new ConfigError([`mysql.${role}: a password (or passwordFile) is needed to create the account`]);
    const text = fs
      .readFileSync(path.join(SQL_DIR, 'accounts', `${role}.sql`), 'utf8')
      .replaceAll('{{account}}', `${mysql.escape(acc.user)}@${mysql.escape(acc.host)}`)
      .replaceAll('{{db}}', mysql.escapeId(cfg.database))
      .replaceAll('{{password}}', '?');
    for (const stmt of splitSqlScript(text)) {
      const params = (stmt.match(/\?/g) ?? []).map(() => acc.password);
      await conn.query(stmt, params);
    }
    done.push(`${role} (${acc.user}@${acc.host})`);
  }
  return done;
}
