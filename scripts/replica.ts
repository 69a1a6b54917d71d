/**
 * A private MariaDB replica of the stack's primary, for the tests and `npm run wan`: a second
 * mariadbd (log_slave_updates, the binlog settings mcrepl needs, read-only), started empty and
 * replicating by GTID from the primary's current position, optionally through a proxy port (the
 * WAN). What the primary commits from then on (schemas, accounts, writes) reaches it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { loadConfig } from '../src/config/load.js';
import { connectMysql } from '../src/registry/mysql.js';
import { currentBinlogPosition } from '../src/source/position.js';
import { ensureAdminUser, killMariadb, MARIADB_BINLOG_ARGS, stackEnv, startMariadb, stopMariadb, type MariadbInstance, type StackLayout } from './stack.js';

export interface Replica {
  inst: MariadbInstance;
  /** Root on the replica, through its socket. */
  root: mysql.Connection;
  /** Resolves once the replica has applied everything the primary has committed now (false: not within timeoutMs). */
  caughtUp(timeoutMs?: number): Promise<boolean>;
  /** A statement as root on a connection of its own (`root` dies with a kill). */
  query(sql: string): Promise<void>;
  /** kill -9 of its mariadbd. */
  kill(): Promise<void>;
  /** Starts it again after a kill, with the same options; replication resumes where it was. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** The stack's installer account on the primary. */
export function primaryAdmin(layout: StackLayout): Promise<mysql.Connection> {
  const { config } = loadConfig({ env: stackEnv(layout), overrides: { 'datacenters.none': { servers: ['127.0.0.1:1'] } } });
  return connectMysql(config.mysql, { database: false });
}

export async function startReplica(layout: StackLayout, opts: { name: string; port: number; serverId: number; masterPort?: number; extraArgs?: string[]; connectRetryS?: number }): Promise<Replica> {
  const dir = path.join(layout.dir, opts.name);
  const inst: MariadbInstance = {
    port: opts.port,
    datadir: path.join(dir, 'data'),
    socket: path.join(dir, 'mysqld.sock'),
    pidFile: path.join(dir, 'mysqld.pid'),
    logFile: path.join(dir, 'mysqld.log'),
  };
  await stopMariadb(inst);
  fs.rmSync(dir, { recursive: true, force: true });
  const args = [...MARIADB_BINLOG_ARGS, `--server-id=${opts.serverId}`, '--log-slave-updates=ON', '--read-only=ON', ...(opts.extraArgs ?? [])];
  await startMariadb(inst, args);
  await ensureAdminUser(inst.socket, layout.secretsDir);
  const root = await mysql.createConnection({ socketPath: inst.socket, user: 'root', password: '' });
  const primary = await primaryAdmin(layout);
  const user = `repl_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('base64url');
  try {
    await primary.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
    await primary.query(`GRANT REPLICATION SLAVE ON *.* TO '${user}'@'127.0.0.1'`);
    const pos = await currentBinlogPosition(primary);
    await root.query('SET GLOBAL gtid_slave_pos = ?', [pos.gtidSet ?? '']);
    await root.query(`CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${opts.masterPort ?? layout.mariadb.port}, MASTER_USER='${user}', MASTER_PASSWORD='${password}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=${opts.connectRetryS ?? 60}`);
    await root.query('START SLAVE');
  } finally {
    await primary.end();
  }
  return {
    inst,
    root,
    async caughtUp(timeoutMs = 30_000) {
      const p = await primaryAdmin(layout);
      let target: string;
      try {
        target = (await currentBinlogPosition(p)).gtidSet ?? '';
      } finally {
        await p.end();
      }
      const [rows] = await root.query<RowDataPacket[]>('SELECT MASTER_GTID_WAIT(?, ?) AS r', [target, timeoutMs / 1000]);
      return Number(rows[0]?.r) === 0;
    },
    async query(sql: string) {
      const c = await mysql.createConnection({ socketPath: inst.socket, user: 'root', password: '' });
      try {
        await c.query(sql);
      } finally {
        await c.end().catch(() => undefined);
      }
    },
    kill: () => killMariadb(inst),
    async restart() {
      await startMariadb(inst, args);
    },
    async stop() {
      await root.query('STOP SLAVE').catch(() => undefined);
      await root.end().catch(() => undefined);
      const p = await primaryAdmin(layout).catch(() => undefined);
      await p?.query(`DROP USER IF EXISTS '${user}'@'127.0.0.1'`).catch(() => undefined);
      await p?.end();
      await stopMariadb(inst);
    },
  };
}
