/**
 * LAG FLOOR for the benchmark: the least any binlog-based replicator can do on this machine.
 * Kept as a reference to measure against; it is not part of the product and has none of its
 * guarantees (no queue, no checkpoint, no retry, nothing survives a restart).
 *
 * One child process runs mcrepl's own BinlogListener (zongji) and, for each committed
 * transaction, writes its ops straight to every memcached server over one pipelined meta-protocol
 * connection per server (mcrepl's MetaWriter): no Redis, no jobs, no second process. The bench
 * runs the same lag probe against it as against mcrepl, under the same source load, so the two
 * lag tables differ only by what mcrepl adds (Redis queues, separate worker processes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MysqlConfig } from '../src/config/schema.js';
import { silentLogger } from '../src/observability/logger.js';
import { MetaWriter } from '../src/sink/meta-client.js';
import { toWrite } from '../src/sink/server-channel.js';
import { BinlogListener } from '../src/source/binlog-listener.js';
import type { Position } from '../src/source/checkpoint-store.js';
import { decodeRow } from '../src/source/row-decoder.js';

export interface FloorOptions {
  /** The tailer account, with a serverId of its own. */
  mysql: MysqlConfig;
  servers: string[];
  from: Position;
}

type Message = { type: 'ready' } | { type: 'error'; error: string };

const THIS_FILE = fileURLToPath(import.meta.url);
const MAX_ITEM_BYTES = 1_048_576;

/** Starts the floor replicator in a child process; resolves once it streams. */
export async function startFloor(opts: FloorOptions): Promise<{ pid: number; stop: () => Promise<void> }> {
  // The options (a password among them) go through the environment, not the command line.
  const child: ChildProcess = spawn(process.execPath, [THIS_FILE, 'run'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, FLOOR_OPTIONS: JSON.stringify(opts) } });
  await new Promise<void>((resolve, reject) => {
    child.on('message', (m: Message) => (m.type === 'ready' ? resolve() : reject(new Error(`lag floor: ${m.error}`))));
    child.once('exit', (code) => reject(new Error(`lag floor exited (code ${code}) before it was ready`)));
  });
  return {
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function run(opts: FloorOptions): Promise<void> {
  const send = (m: Message) => process.send?.(m);
  const writers = opts.servers.map((s) => new MetaWriter(s, { timeoutMs: 5_000, connectTimeoutMs: 5_000 }));
  const listener = new BinlogListener({ mysql: opts.mysql, table: 'mc_storage', reconnectInitialMs: 200, reconnectMaxMs: 2_000, heartbeatMs: 2_000, stallTimeoutMs: 10_000, logger: silentLogger });
  let t = 0;
  listener.on('transaction', (txn) => {
    const ops = [];
    for (const row of txn.rows) {
      const d = decodeRow(row.values, ++t, txn.commitTimeSec, { maxItemBytes: MAX_ITEM_BYTES });
      const op = d.ok ? d.op : d.instead;
      if (op && op.kind !== 'flush') ops.push(toWrite(op, Date.now() / 1000));
    }
    if (ops.length === 0) return;
    // Not awaited: each connection keeps the requests in order (pipelined).
    for (const w of writers) void w.write(ops).then((outcomes) => outcomes.forEach((o) => !o.ok && send({ type: 'error', error: o.error })));
  });
  listener.on('fatal', (err) => send({ type: 'error', error: err.message }));
  listener.once('ready', () => send({ type: 'ready' }));
  process.once('SIGTERM', () => {
    void listener.stop().finally(() => {
      for (const w of writers) void w.close();
      process.exit(0);
    });
  });
  listener.start(opts.from);
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === 'run') {
  run(JSON.parse(process.env.FLOOR_OPTIONS ?? '{}') as FloorOptions).catch((err: unknown) => {
    process.send?.({ type: 'error', error: err instanceof Error ? err.message : String(err) } satisfies Message);
    process.exit(1);
  });
}
