/** A pipeline of the run as real CLI processes: started from a position, their CPU, memory and profiles. */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { RedisCheckpointStore, type Checkpoint, type Position } from '../src/source/checkpoint-store.js';
import { cpuSecondsOf, Proc, sleep } from '../scripts/harness.js';
import { repoRoot, stackLayout, status } from '../scripts/stack.js';
import { fmt, type Ctx } from './context.js';

export interface ProcUsage {
  name: string;
  peakRssBytes: number;
  cpuSeconds: number;
}

export interface DrainResult {
  writer: string;
  /** From the processes being up to the last op applied. */
  seconds: number;
  /** From spawning the processes until they were up (not in `seconds`). */
  startupSeconds: number;
  rowsPerSec: number;
  usage: ProcUsage[];
  /** CPU seconds the stack's servers used during the drain. */
  servers: { name: string; cpuSeconds: number }[];
  txnSeq: number;
}

/** A process whose CPU time is reported. */
export interface Measured {
  name: string;
  cpuSeconds: () => number;
}

export const measured = (procs: Proc[]): Measured[] => procs.map((p) => ({ name: p.name.replace(/^drain-\w+-/, ''), cpuSeconds: () => p.usage()?.cpuSeconds ?? 0 }));

/** CPU seconds used so far by the pipeline's processes, the stack's servers and this process (the load). */
export function cpuNow(procs: Measured[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const p of procs) m.set(p.name, p.cpuSeconds());
  for (const [name, cpu] of stackCpu()) {
    const key = name.startsWith('memcached') ? 'memcached ×4' : name;
    m.set(key, (m.get(key) ?? 0) + cpu);
  }
  const self = process.cpuUsage();
  m.set('load + prober', (self.user + self.system) / 1e6);
  return m;
}

/** Share of one core each used between two samples `seconds` apart. */
export function cpuShare(before: Map<string, number>, after: Map<string, number>, seconds: number): Map<string, number> {
  return new Map([...after].map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / seconds]));
}

/** CPU seconds used so far by each server of the stack (MariaDB, Redis, memcached). */
export function stackCpu(): Map<string, number> {
  return new Map(status(stackLayout()).flatMap((s) => (s.pid === undefined ? [] : [[s.name, cpuSecondsOf(s.pid)] as [string, number]])));
}

export function pipelineProcs(ctx: Ctx, file: string, tag: string): { tailer: Proc; workers: Proc[] } {
  const node = (name: string) => [...ctx.opts.nodeOption, ...(ctx.opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(ctx.logDir, 'prof', name)}`] : [])];
  return {
    tailer: new Proc(`${tag}-tailer`, ['-c', file, 'tailer'], ctx.logDir, node(`${tag}-tailer`)),
    workers: Object.keys(ctx.config.datacenters).map((dc) => new Proc(`${tag}-worker-${dc}`, ['-c', file, 'worker', dc], ctx.logDir, node(`${tag}-worker-${dc}`))),
  };
}

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  startTime: number;
  endTime: number;
}

/** The functions a V8 CPU profile spent the most self time in. */
export function topFunctions(file: string, n = 12): { fn: string; percent: number }[] {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const total = prof.nodes.reduce((a, x) => a + (x.hitCount ?? 0), 0) || 1;
  const by = new Map<string, number>();
  for (const x of prof.nodes) {
    const { functionName, url, lineNumber } = x.callFrame;
    const where = url ? `${url.replace(/^file:\/\//, '').replace(`${repoRoot}/`, '').replace(/^.*node_modules\//, '')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    by.set(key, (by.get(key) ?? 0) + (x.hitCount ?? 0));
  }
  return [...by.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([fn, hits]) => ({ fn, percent: (100 * hits) / total }));
}

export function profileReport(ctx: Ctx): string[] {
  const dir = path.join(ctx.logDir, 'prof');
  if (!fs.existsSync(dir)) return [];
  const out = ['## Where the time goes (V8 CPU profiles of the drain, self time)', ''];
  for (const proc of fs.readdirSync(dir).sort()) {
    const files = fs.readdirSync(path.join(dir, proc)).filter((f) => f.endsWith('.cpuprofile'));
    if (!files[0]) continue;
    out.push(`**${proc}**`, '', '| function | self time |', '|---|---:|', ...topFunctions(path.join(dir, proc, files[0])).map((f) => `| \`${f.fn.replace(/\|/g, '\\|')}\` | ${fmt(f.percent, 1)} % |`), '');
  }
  return out;
}

/** Resolves once `key` exists (a process took its lease: it is up). */
export async function whenKey(redis: Redis, key: string, timeoutMs = 120_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await redis.exists(key))) {
    if (performance.now() > deadline) throw new Error(`${key} did not appear in ${timeoutMs / 1000} s: a pipeline process did not start (see its log)`);
    await sleep(10);
  }
}

export async function startFrom(ctx: Ctx, keys: RedisKeys, from: Position): Promise<void> {
  const cp: Checkpoint = { position: from, txnSeq: 0, epoch: randomUUID(), savedAt: Date.now() };
  await new RedisCheckpointStore(ctx.redis, keys).save(cp);
}
