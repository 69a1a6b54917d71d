/** `mcrepl schema install`: create the database, tables, trigger, procedures and role accounts. */
import { connectMysql } from '../../registry/mysql.js';
import { installAll } from '../../registry/schema-installer.js';
import type { Context } from '../context.js';

export async function schemaInstall(ctx: Context): Promise<number> {
  const { mysql, memcached } = ctx.config;
  const conn = await connectMysql(mysql, { database: false });
  try {
    const r = await installAll(conn, ctx.config);
    process.stdout.write(`installed ${r.files.join(', ')} (${r.statements} statements) into \`${mysql.database}\` on ${mysql.host}:${mysql.port}\n`);
    process.stdout.write(`mc_settings.max_item_bytes = ${memcached.maxItemBytes} (memcached.maxItemBytes)\n`);
    if (r.accounts.length) process.stdout.write(`accounts: ${r.accounts.join(', ')}\n`);
    return 0;
  } finally {
    await conn.end();
  }
}
