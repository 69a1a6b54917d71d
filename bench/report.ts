/** The machine and software a report was measured on. */
import os from 'node:os';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { MemcachedTextClient } from '../scripts/memcached-text.js';
import { fmt, type Ctx } from './context.js';

export function machine(ctx: Ctx, versions: Record<string, string>): string {
  const cpus = os.cpus();
  return [
    `- **CPU**: ${cpus[0]?.model ?? 'unknown'}, ${cpus.length} cores (everything below shares them: MariaDB, Redis, 4 memcached, the pipeline and the load)`,
    `- **Memory**: ${fmt(os.totalmem() / 1024 ** 3, 1)} GiB; **OS**: ${os.type()} ${os.release()}`,
    `- **Software**: Node ${process.version}, ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `- **Topology**: ${Object.entries(ctx.config.datacenters).map(([dc, d]) => `${dc} (${d.servers.length} servers)`).join(', ')}, ${ctx.config.partitions} partition${ctx.config.partitions === 1 ? '' : 's'}, replicate routing`,
  ].join('\n');
}

export async function versions(ctx: Ctx): Promise<Record<string, string>> {
  const c = await mysql.createConnection(ctx.admin);
  const [v] = await c.query<RowDataPacket[]>('SELECT VERSION() AS v');
  await c.end();
  const redisInfo = await ctx.redis.info('server');
  const mc = new MemcachedTextClient(ctx.servers[0]!);
  const st = await mc.stats();
  mc.close();
  return { MySQL: String(v[0]!.v), Redis: /redis_version:(\S+)/.exec(redisInfo)?.[1] ?? '?', memcached: st.version ?? '?' };
}
