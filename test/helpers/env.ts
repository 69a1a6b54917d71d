/**
 * A private corner of the local stack for one test file: its own database (schema) and Redis
 * prefix, so tests never step on each other; the memcached servers are shared, so every test
 * uses keys of its own (see `key()`).
 */
import { randomBytes } from 'node:crypto';
import type { Connection } from 'mysql2/promise';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/load.js';
import { serversOf, type ResolvedConfig } from '../../src/config/schema.js';
import { connectMysql } from '../../src/registry/mysql.js';
import { installAll } from '../../src/registry/schema-installer.js';
import { mysqlFor } from '../../src/registry/accounts.js';
import { redisOptions } from '../../src/coordination/redis.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { Tailer } from '../../src/source/tailer.js';
import { DatacenterWorker } from '../../src/sink/datacenter-worker.js';
import type { WriterFactory } from '../../src/sink/memcached-writer.js';
import { stackEnv, stackLayout, status } from '../../scripts/stack.js';
import { textGet } from '../../scripts/memcached-text.js';
import { RedisKeys } from '../../src/fanout/redis-keys.js';
import { datacenterDepth } from '../../src/fanout/topology.js';
import { waitFor } from './wait-for.js';

export const layout = stackLayout();

export function assertStackUp(): void {
  const down = status(layout).filter((s) => s.pid === undefined);
  if (down.length > 0) {
    throw new Error(`local stack not running (${down.map((s) => s.name).join(', ')}); run \`npm test\` (it starts it) or \`npm run stack:up\``);
  }
}

export function testLogger(name: string): Logger {
  return createLogger({ level: (process.env.MCREPL_TEST_LOG as 'debug' | undefined) ?? 'silent', name, stderr: true });
}

export interface TestEnvOptions {
  partitions?: number;
  overrides?: Record<string, unknown>;
}

export class TestEnv {
  readonly id = randomBytes(4).toString('hex');
  readonly database = `mct_${this.id}`;
  readonly prefix = `mct-${this.id}`;
  config!: ResolvedConfig;
  /** The application's connection: the writer account (EXECUTE on the procedures, INSERT on mc_storage). */
  sql!: Connection;
  /** The installer's connection (everything), for what an application may not do. */
  root!: Connection;
  redis!: Redis;
  readonly logger: Logger;
  private tailers: Tailer[] = [];
  private workers: DatacenterWorker[] = [];
  private keySeq = 0;

  constructor(private readonly opts: TestEnvOptions = {}) {
    this.logger = testLogger(this.id);
  }

  async setup(): Promise<this> {
    assertStackUp();
    const servers = (dc: string) => layout.memcached.filter((m) => m.dc === dc).map((m) => `127.0.0.1:${m.port}`);
    this.config = loadConfig({
      env: stackEnv(layout),
      overrides: {
        'mysql.database': this.database,
        // Several tailers run side by side in the tests: each needs its own replica server_id.
        'mysql.serverId': 100_000 + Math.floor(Math.random() * 4_000_000_000),
        'redis.prefix': this.prefix,
        partitions: this.opts.partitions ?? 4,
        'datacenters.east': { servers: servers('east') },
        'datacenters.west': { servers: servers('west') },
        // Quick takeover after a kill -9 in the tests.
        'tailer.leaseTtlMs': 3_000,
        'worker.leaseTtlMs': 3_000,
        'worker.probeIntervalMs': 100,
        'worker.settleMs': 200,
        'memcached.timeoutMs': 1_000,
        ...this.opts.overrides,
      },
    }).config;
    const admin = await connectMysql(this.config.mysql, { database: false });
    await installAll(admin, this.config);
    await admin.end();
    this.root = await connectMysql(this.config.mysql);
    this.sql = await connectMysql(mysqlFor(this.config.mysql, 'writer'));
    this.redis = new Redis(redisOptions(this.config.redis));
    // Reconnects by itself (a test that restarts or fails Redis over); its commands say the rest.
    this.redis.on('error', () => undefined);
    return this;
  }

  /** A fresh application connection (after a MySQL restart killed the old one). */
  async reconnectSql(): Promise<void> {
    await this.sql?.end().catch(() => undefined);
    await this.root?.end().catch(() => undefined);
    this.root = await connectMysql(this.config.mysql);
    this.sql = await connectMysql(mysqlFor(this.config.mysql, 'writer'));
  }

  /** Every memcached server of every data center. */
  get servers(): string[] {
    return Object.values(this.config.datacenters).flatMap((d) => serversOf(d));
  }

  /** A key no other test uses. */
  key(label = 'k'): string {
    return `${this.prefix}:${label}:${++this.keySeq}`;
  }

  async startTailer(opts: { resetCheckpoint?: boolean } = {}): Promise<Tailer> {
    const t = new Tailer(this.config, { logger: this.logger.child({ c: 'tailer' }), ...opts });
    this.tailers.push(t);
    await t.start();
    return t;
  }

  async startWorker(dc: string, writerFactory?: WriterFactory): Promise<DatacenterWorker> {
    const w = new DatacenterWorker(this.config, dc, { logger: this.logger.child({ c: 'worker' }), ...(writerFactory ? { writerFactory } : {}) });
    this.workers.push(w);
    await w.start();
    return w;
  }

  async startPipeline(): Promise<{ tailer: Tailer; workers: DatacenterWorker[] }> {
    const workers = await this.startWorkers();
    const tailer = await this.startTailer();
    return { tailer, workers };
  }

  async startWorkers(): Promise<DatacenterWorker[]> {
    return Promise.all(Object.keys(this.config.datacenters).map((dc) => this.startWorker(dc)));
  }

  async stopWorkers(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
    this.workers = [];
  }

  /** Jobs not yet applied, over every partition of every data center. */
  async backlog(): Promise<number> {
    let n = 0;
    for (const dc of Object.keys(this.config.datacenters)) {
      const d = await datacenterDepth(this.redis, new RedisKeys(this.prefix), dc, this.config.partitions);
      n += d.waiting + d.active + d.delayed;
    }
    return n;
  }

  async stopPipeline(): Promise<void> {
    await Promise.all([...this.tailers.map((t) => t.close()), ...this.workers.map((w) => w.close())]);
    this.tailers = [];
    this.workers = [];
  }

  /** The value of a key on every server (null where missing), as a plain client reads it. */
  async readEverywhere(key: string | Buffer): Promise<(Buffer | null)[]> {
    return Promise.all(this.servers.map((s) => textGet(s, key)));
  }

  async teardown(): Promise<void> {
    await this.stopPipeline();
    await this.root?.query(`DROP DATABASE IF EXISTS \`${this.database}\``).catch(() => undefined);
    await this.root?.end().catch(() => undefined);
    await this.sql?.end().catch(() => undefined);
    if (this.redis) {
      let cursor = '0';
      do {
        const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await this.redis.del(...keys);
      } while (cursor !== '0');
      this.redis.disconnect();
    }
  }
}

export async function createTestEnv(opts: TestEnvOptions = {}): Promise<TestEnv> {
  return new TestEnv(opts).setup();
}

/** Waits until every data center has applied a flush (a row returned by flush_namespace) in every partition. */
export async function waitForFlush(env: TestEnv, flush: Record<string, unknown>, timeoutMs = 10_000): Promise<void> {
  const keys = new RedisKeys(env.prefix);
  const flushId = Number(flush.flush_id);
  await waitFor(
    async () => {
      const counts = await Promise.all(Object.keys(env.config.datacenters).map((dc) => env.redis.scard(keys.flushDone(flushId, String(flush.token), dc))));
      return counts.every((n) => n === env.config.partitions);
    },
    { timeoutMs, message: `flush #${flushId} applied in every data center` },
  );
}
