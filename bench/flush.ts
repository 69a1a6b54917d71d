/** `mcrepl flush` of big namespaces. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { MemcachedTextClient } from '../scripts/memcached-text.js';
import { repoRoot } from '../scripts/stack.js';
import { say, fmt, type Ctx, insertRows, endMarker, waitForMarker } from './context.js';

export interface FlushResult {
  keys: number;
  mysqlSeconds: number;
  totalSeconds: number;
  sampled: number;
  stillThere: number;
  registryLeft: number;
}

export async function flushRun(ctx: Ctx, size: number, idx: number, pipe: { file: string; keys: RedisKeys }): Promise<FlushResult> {
  const nsId = 20 + idx;
  const name = `flush${size}`;
  const c = await mysql.createConnection(ctx.admin);
  await c.query('CALL create_namespace(?, ?)', [nsId, name]);
  await c.end();
  say(`flush ${fmt(size)}: writing the namespace's keys`);
  const value = 'f'.repeat(32);
  await insertRows(ctx, size, (i) => [nsId, `${name}-${ctx.runId}:${i}`, value, 0]);
  const marker = await endMarker(ctx);
  if (!(await waitForMarker(ctx, pipe.keys, marker, 600_000))) throw new Error(`the ${fmt(size)} keys did not reach memcached in 10 minutes`);
  say(`flush ${fmt(size)}: on every server; running mcrepl flush ${name}`);
  const started = performance.now();
  let mysqlSeconds = NaN;
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [path.join(repoRoot, 'bin', 'mcrepl.js'), '-c', pipe.file, 'flush', name, '--timeout', '600'], { stdio: ['ignore', 'pipe', 'ignore'] });
    p.stdout.on('data', (d: Buffer) => {
      if (Number.isNaN(mysqlSeconds) && /keys? to delete/.test(d.toString())) mysqlSeconds = (performance.now() - started) / 1000;
    });
    p.on('exit', resolve);
  });
  const totalSeconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`mcrepl flush ${name} exited ${code}`);
  // Every server, a sample of the keys (evenly spread), read with a plain client.
  const step = Math.max(1, Math.floor(size / 5_000));
  const sample = Array.from({ length: Math.ceil(size / step) }, (_, i) => `${name}-${ctx.runId}:${i * step}`);
  let stillThere = 0;
  for (const server of ctx.servers) {
    const client = new MemcachedTextClient(server, 5_000);
    for (let i = 0; i < sample.length; i += 100) stillThere += (await client.getMany(sample.slice(i, i + 100))).size;
    client.close();
  }
  const a = await mysql.createConnection(ctx.admin);
  const [r] = await a.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM mc_stored_keys WHERE ns_id = ?', [nsId]);
  await a.end();
  return { keys: size, mysqlSeconds, totalSeconds, sampled: sample.length * ctx.servers.length, stillThere, registryLeft: Number(r[0]!.n) };
}
