/** MySQL connections for admin work (schema install, flush, verify). */
import mysql, { type Connection } from 'mysql2/promise';
import type { MysqlConfig } from '../config/schema.js';

export function connectMysql(cfg: MysqlConfig, opts: { database?: boolean } = {}): Promise<Connection> {
  return mysql.createConnection({
    host: cfg.host,
    port: cfg.port,
    user: cfg.user,
    password: cfg.password,
    charset: 'utf8mb4',
    connectTimeout: cfg.connectTimeoutMs,
    supportBigNumbers: true,
    ...(opts.database === false ? {} : { database: cfg.database }),
  });
}
