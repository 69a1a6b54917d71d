/** The limits of this machine, measured in the same run: zongji's parse rate, raw pipelined memcached, MySQL's write rate. */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import ZongJi, { type AnyBinlogEvent, type RowsEvent } from '@vlasky/zongji';
import mysql from 'mysql2/promise';
import { mysqlFor } from '../src/registry/accounts.js';
import { type Position } from '../src/source/checkpoint-store.js';
import { type Ctx, NS } from './context.js';

export async function zongjiCeiling(ctx: Ctx, from: Position, rows: number): Promise<number> {
  const acc = mysqlFor(ctx.config.mysql, 'tailer');
  const z = new ZongJi({ host: acc.host, port: acc.port, user: acc.user, password: acc.password, charset: 'utf8mb4' });
  let n = 0;
  const started = performance.now();
  const seconds = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`zongji read only ${n} of ${rows} rows in 5 minutes`)), 300_000);
    z.on('binlog', (e: AnyBinlogEvent) => {
      if (e.getEventName() !== 'writerows') return;
      n += (e as RowsEvent & { rows: unknown[] }).rows.length;
      if (n >= rows) {
        clearTimeout(timer);
        resolve((performance.now() - started) / 1000);
      }
    });
    z.on('error', reject);
    z.start({
      serverId: ctx.config.mysql.serverId + 100,
      includeEvents: ['tablemap', 'writerows', 'xid', 'query', 'gtid', 'mariadbgtid', 'rotate', 'format'],
      includeSchema: { [ctx.database]: ['mc_storage'] },
      ...(from.gtidSet ? { gtidSet: from.gtidSet } : { filename: from.file, position: from.pos }),
    });
  });
  z.stop();
  return rows / seconds;
}

/** Pipelined `ms` requests, prebuilt, to every server at once; sets per second over all. */
export async function memcachedCeiling(servers: string[], perServer: number, valueBytes: number): Promise<number> {
  const value = 'r'.repeat(valueBytes);
  const chunkOps = 10_000;
  const chunk = Buffer.from(Array.from({ length: chunkOps }, (_, i) => `ms raw:${i} ${valueBytes} T60\r\n${value}\r\n`).join(''));
  const started = performance.now();
  await Promise.all(
    servers.map(
      (address) =>
        new Promise<void>((resolve, reject) => {
          const i = address.lastIndexOf(':');
          const s = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
          const want = Math.ceil(perServer / chunkOps) * chunkOps * 4; // "HD\r\n" per request
          let got = 0;
          let tail = '';
          s.setNoDelay(true);
          s.on('data', (d: Buffer) => {
            got += d.length;
            tail = (tail + d.toString('latin1', Math.max(0, d.length - 8))).slice(-8);
            if (got >= want) {
              s.destroy();
              if (got === want && tail.endsWith('HD\r\n')) resolve();
              else reject(new Error(`${address}: unexpected replies to the raw sets`));
            }
          });
          s.on('error', reject);
          s.once('connect', async () => {
            for (let sent = 0; sent < perServer; sent += chunkOps) {
              if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
            }
          });
        }),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  return (Math.ceil(perServer / chunkOps) * chunkOps * servers.length) / seconds;
}

/** CALL set_key as fast as `connections` autocommit connections go, for `seconds`. */
export async function setKeyRate(ctx: Ctx, connections: number, seconds: number): Promise<number> {
  const conns = await Promise.all(Array.from({ length: connections }, () => mysql.createConnection(ctx.writer)));
  const end = Date.now() + seconds * 1000;
  let calls = 0;
  const value = 'm'.repeat(ctx.opts.valueBytes);
  const started = performance.now();
  await Promise.all(
    conns.map(async (c, ci) => {
      for (let j = 0; Date.now() < end; j++) {
        await c.query('CALL set_key(?, ?, ?, 0)', [NS.lag, `max:${ci}:${j % 1000}`, value]);
        calls++;
      }
    }),
  );
  const rate = calls / ((performance.now() - started) / 1000);
  await Promise.all(conns.map((c) => c.end()));
  return rate;
}
