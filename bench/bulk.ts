/** One large transaction, applied by the drain's processes. */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { connectMysql } from '../src/registry/mysql.js';
import { Proc, sleep } from '../scripts/harness.js';
import { MemcachedTextClient } from '../scripts/memcached-text.js';
import { say, fmt, mb, type Ctx, NS, endMarker, waitForMarker, usedMemory } from './context.js';
import { type ProcUsage } from './pipeline.js';

export interface BulkResult {
  rows: number;
  /** The INSERT … SELECT, then its COMMIT (MySQL's own time, before the clock starts). */
  insertSeconds: number;
  commitSeconds: number;
  /** From the COMMIT returning to the last key on every server. */
  lastKeySeconds: number;
  /** From the COMMIT returning to every partition of every data center past it (end marker). */
  doneSeconds: number;
  usage: ProcUsage[];
  /** Peak RSS is since the bulk stage began (VmHWM reset), not since the process started. */
  peakSinceReset: boolean;
  sampled: number;
  found: number;
  wrongValue: number;
  /** memcached evictions during the stage, over every server (a server too small for the rows). */
  evictions: number;
  /** Redis memory in use at the most (sampled), above what it used before the stage: the staged chunks. */
  redisPeakBytes: number;
  leaseLost: number;
  restarts: number;
  lateRenewals: number;
  /** Other warnings and errors in the processes' logs, by message. */
  otherLogs: Map<string, number>;
  alive: boolean;
}

/** Sets a process's peak RSS (VmHWM) back to its current RSS (Linux ≥ 4.0); false if refused. */
export function resetPeakRss(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Bytes each log file of the run has now, to read only what is written after. */
export function logSizes(dir: string): Map<string, number> {
  return new Map(fs.readdirSync(dir).filter((f) => f.endsWith('.log')).map((f) => [f, fs.statSync(path.join(dir, f)).size]));
}

export const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** The warnings and errors (pino levels ≥ 40) written to the run's logs since `from`, by message. */
export function logsSince(dir: string, from: Map<string, number>, names: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.log') || !names.some((n) => f.startsWith(`${n}.`))) continue;
    const start = from.get(f) ?? 0; // a log that did not exist before: a restarted process's
    const text = fs.readFileSync(path.join(dir, f)).subarray(start).toString('utf8');
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      let level = 50;
      let msg = line.slice(0, 120);
      try {
        const j = JSON.parse(line) as { level?: number | string; msg?: string };
        level = typeof j.level === 'number' ? j.level : (LEVELS[j.level ?? ''] ?? 50);
        msg = j.msg ?? msg;
      } catch {
        // not JSON: a crash's stack trace
      }
      if (level < 40) continue;
      const key = `${f.replace(/\.\d+\.log$/, '')}: ${msg.replace(/lease \S+/, 'lease …')}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * One transaction of `rows` rows (`INSERT INTO mc_storage … SELECT … FROM seq_1_to_<rows>`)
 * applied by a running pipeline: the clock starts when its COMMIT returns and stops when every
 * server holds its last key, then when every partition is past it (a flush marker written
 * after it). Each process's peak RSS is reset first, so it is the peak of this stage.
 */
export async function bulk(ctx: Ctx, pipe: { keys: RedisKeys; procs: Proc[] }, rows: number): Promise<BulkResult> {
  const prefix = `big-${ctx.runId}-`;
  const lastKey = `${prefix}${rows}`;
  const value = 'v'.repeat(100);
  const clients = ctx.servers.map((s) => new MemcachedTextClient(s, 5_000));
  const evictions = async () => (await Promise.all(clients.map((c) => c.stats()))).reduce((a, s) => a + Number(s.evictions ?? 0), 0);
  const evictionsBefore = await evictions();
  const redisBefore = await usedMemory(ctx.redis);
  let redisPeak = redisBefore;
  let lastRedisSample = 0;
  const procs = pipe.procs;
  const peakSinceReset = procs.map((p) => resetPeakRss(p.pid)).every(Boolean);
  const pids = procs.map((p) => p.pid);
  const cpuBefore = procs.map((p) => p.usage()?.cpuSeconds ?? 0);
  const logsBefore = logSizes(ctx.logDir);
  // The installing account: the applications' may write mc_storage but not read the sequence table.
  const conn = await connectMysql(ctx.config.mysql);
  let insertSeconds: number;
  let commitSeconds: number;
  let committed: number;
  try {
    await conn.query('BEGIN');
    let t = performance.now();
    // The issue's statement; the run's id in the keys (the servers may hold an earlier run's).
    await conn.query(`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT ?, CONCAT(?, seq), REPEAT('v', 100) FROM seq_1_to_${rows}`, [NS.bulk, prefix]);
    insertSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    await conn.query('COMMIT');
    committed = performance.now();
    commitSeconds = (committed - t) / 1000;
  } finally {
    await conn.end();
  }
  say(`bulk: ${fmt(rows)} rows inserted in ${fmt(insertSeconds, 1)} s, committed in ${fmt(commitSeconds, 1)} s; waiting for ${lastKey} on every server`);
  const marker = await endMarker(ctx);
  const pending = new Set(clients.keys());
  let lastReport = performance.now();
  while (pending.size > 0) {
    if (performance.now() - lastRedisSample > 200) {
      lastRedisSample = performance.now();
      redisPeak = Math.max(redisPeak, await usedMemory(ctx.redis));
    }
    for (const i of [...pending]) if ((await clients[i]!.get(lastKey))?.value.toString() === value) pending.delete(i);
    if (pending.size === 0) break;
    if (performance.now() - committed > 900_000) throw new Error(`the last key of the ${fmt(rows)}-row transaction did not reach every server in 15 minutes; logs in ${ctx.logDir}`);
    if (performance.now() - lastReport > 5_000) {
      lastReport = performance.now();
      const w = await Promise.all(Object.keys(ctx.config.datacenters).map(async (dc) => `${dc} at t ${Object.values(await ctx.redis.hgetall(pipe.keys.applied(dc))).map((v) => v.split(':').at(-1)).join('/')}`));
      say(`  bulk: ${fmt((performance.now() - committed) / 1000)} s after the commit, ${w.join(', ')}, ${procs.map((p) => `${p.name.replace(/^drain-\w+-/, '')} ${mb(p.usage()?.peakRssBytes ?? 0)}`).join(', ')}`);
    }
    await sleep(5);
  }
  const lastKeySeconds = (performance.now() - committed) / 1000;
  if (!(await waitForMarker(ctx, pipe.keys, marker, 600_000))) throw new Error(`the end marker after the ${fmt(rows)}-row transaction was not applied in 10 minutes`);
  const doneSeconds = (performance.now() - committed) / 1000;
  const usage = procs.map((p, i) => {
    const u = p.usage() ?? { peakRssBytes: 0, cpuSeconds: 0 };
    return { name: p.name.replace(/^drain-\w+-/, ''), peakRssBytes: u.peakRssBytes, cpuSeconds: u.cpuSeconds - cpuBefore[i]! };
  });
  // A sample of the keys, evenly spread, with the last one, read on every server.
  const step = Math.max(1, Math.floor(rows / 20_000));
  const sample = [...new Set([...Array.from({ length: Math.ceil(rows / step) }, (_, i) => `${prefix}${1 + i * step}`), lastKey])];
  let found = 0;
  let wrongValue = 0;
  for (const c of clients) {
    for (let i = 0; i < sample.length; i += 100) {
      for (const v of (await c.getMany(sample.slice(i, i + 100))).values()) {
        found++;
        if (!v.equals(Buffer.from(value))) wrongValue++;
      }
    }
  }
  const evicted = (await evictions()) - evictionsBefore;
  for (const c of clients) c.close();
  const logs = logsSince(ctx.logDir, logsBefore, procs.map((p) => p.name));
  const pick = (re: RegExp) => [...logs].filter(([k]) => re.test(k)).reduce((a, [, n]) => a + n, 0);
  const leaseLost = pick(/lost the lease/);
  const restarts = pick(/replacing it/);
  const lateRenewals = pick(/lease renewal was late/);
  const otherLogs = new Map([...logs].filter(([k]) => !/lost the lease|replacing it|lease renewal was late/.test(k)));
  const alive = procs.every((p, i) => p.pid !== undefined && p.pid === pids[i]);
  return { rows, insertSeconds, commitSeconds, lastKeySeconds, doneSeconds, usage, peakSinceReset, sampled: sample.length * ctx.servers.length, found, wrongValue, evictions: evicted, redisPeakBytes: redisPeak - redisBefore, leaseLost, restarts, lateRenewals, otherLogs, alive };
}
