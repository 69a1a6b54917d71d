/**
 * BULLMQ'S OWN COST for the benchmark: what one job costs in CPU on this machine with nothing
 * else in it. One child process adds jobs to one queue at a steady rate (BullMQ's Queue.add,
 * a job of the size mcrepl's live jobs have) and runs them with a Worker whose processor does
 * nothing, the way one data center's queue works at live rates: jobs arrive one by one and the
 * worker waits for each. Not part of the product.
 *
 * The bench compares it with the CPU mcrepl's processes and Redis use in the lag runs: at live
 * rates each job is a Redis round trip to add, one to hand over and one to complete, and their
 * client code (ioredis, BullMQ) is most of what mcrepl spends beyond the lag floor.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { redisOptions } from '../src/coordination/redis.js';
import type { RedisConfig } from '../src/config/schema.js';

export interface BullmqCostOptions {
  redis: RedisConfig;
  /** Key prefix, removed by the caller afterwards. */
  prefix: string;
  jobsPerSec: number;
  seconds: number;
  /** Size of each job's data string (mcrepl's inline jobs carry their ops base64). */
  jobBytes: number;
}

export interface BullmqCostResult {
  jobs: number;
  seconds: number;
  /** CPU seconds of the process (adding and running the jobs) over `seconds`. */
  cpuSeconds: number;
}

type Message = { type: 'done'; result: BullmqCostResult } | { type: 'error'; error: string };

const THIS_FILE = fileURLToPath(import.meta.url);
/** Not measured: the first jobs, while the code warms up. */
const WARM_UP_MS = 2_000;

/** Runs the measurement in a child process; `onMeasuring` is called when the measured part (after warm-up) begins. */
export async function measureBullmq(opts: BullmqCostOptions, onMeasuring?: () => void): Promise<BullmqCostResult> {
  const child = spawn(process.execPath, [THIS_FILE, 'run'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, BULLMQ_COST_OPTIONS: JSON.stringify(opts) } });
  return new Promise<BullmqCostResult>((resolve, reject) => {
    child.on('message', (m: Message | { type: 'measuring' }) => {
      if (m.type === 'measuring') onMeasuring?.();
      else if (m.type === 'done') resolve(m.result);
      else reject(new Error(`bullmq cost: ${m.error}`));
    });
    child.once('exit', (code) => reject(new Error(`bullmq cost exited (code ${code}) before it reported`)));
  });
}

async function run(opts: BullmqCostOptions): Promise<BullmqCostResult> {
  const connection = new Redis({ ...redisOptions(opts.redis), maxRetriesPerRequest: null });
  const name = 'cost';
  const queue = new Queue(name, { connection, prefix: opts.prefix, streams: { events: { maxLen: 100 } } });
  let done = 0;
  const worker = new Worker(
    name,
    async () => {
      done++;
    },
    { connection, prefix: opts.prefix, concurrency: 1 },
  );
  const data = { b: 'x'.repeat(opts.jobBytes), n: 1 };
  const interval = 1000 / opts.jobsPerSec;
  const started = performance.now();
  let measureFrom = 0;
  let cpu0 = process.cpuUsage();
  let done0 = 0;
  const end = started + WARM_UP_MS + opts.seconds * 1000;
  let next = started;
  while (performance.now() < end) {
    if (!measureFrom && performance.now() - started >= WARM_UP_MS) {
      measureFrom = performance.now();
      cpu0 = process.cpuUsage();
      done0 = done;
      process.send?.({ type: 'measuring' });
    }
    void queue.add('ops', data, { removeOnComplete: true });
    next += interval;
    const wait = next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - measureFrom) / 1000;
  const jobs = done - done0;
  await worker.close();
  await queue.close();
  connection.disconnect();
  return { jobs, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === 'run') {
  run(JSON.parse(process.env.BULLMQ_COST_OPTIONS ?? '{}') as BullmqCostOptions).then(
    (result) => {
      process.send?.({ type: 'done', result } satisfies Message);
      process.exit(0);
    },
    (err: unknown) => {
      process.send?.({ type: 'error', error: err instanceof Error ? err.message : String(err) } satisfies Message);
      process.exit(1);
    },
  );
}
