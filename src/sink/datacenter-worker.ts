/**
 * The worker group of one data center: one BullMQ consumer per partition queue, each at
 * concurrency 1, so ops on a key are applied in source order.
 *
 * - A lease makes sure only one group per data center consumes (two would reorder a queue).
 * - Each partition remembers the last op it applied (`epoch:t`); ops at or below it (replays
 *   after a tailer restart) are skipped, so a replay never moves a key back to an older value.
 * - A job left "active" by a worker that died is handled first at start, before anything
 *   newer, with the same skip rule (BullMQ would otherwise run it after newer jobs).
 * - Jobs never fail: transient memcached errors are retried inside the job; ops refused for
 *   good become dead letters. On shutdown, a job that cannot finish in the grace period stays
 *   active and is picked up again by the next start.
 */
import { EventEmitter } from 'node:events';
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { DatacenterConfig, ResolvedConfig } from '../config/schema.js';
import { Lease, sleep } from '../coordination/lease.js';
import { Lifecycle, type LifecycleState } from '../coordination/lifecycle.js';
import { RedisRestartDetector, connectRedis } from '../coordination/redis.js';
import { errorMessage, LeaseLostError, McreplError } from '../errors.js';
import { DeadLetterStore } from '../fanout/dead-letters.js';
import { corrupt, readJob, sliceJobOps, type JobData } from '../fanout/job-codec.js';
import type { Op } from '../fanout/op.js';
import { printableKey, type FlushMarkerOp } from '../fanout/op.js';
import { RedisKeys } from '../fanout/redis-keys.js';
import { readTopology } from '../fanout/topology.js';
import type { Logger } from '../observability/logger.js';
import type { WriterFactory } from './memcached-writer.js';
import { writerFactoryFor } from './writer-factory.js';
import { RedisMissedOpStore } from './missed-ops.js';
import { OpApplier } from './op-applier.js';
import { ReplicateRoute } from './routes/replicate.js';
import { type Route } from './routes/route.js';
import { createRoute } from './routes/create-route.js';
import { ServerChannel, type ChannelStore, type Refusal, type SavedServerState, type WarmResult, type WriteableOp } from './server-channel.js';
import { Rewarmer, warmFromPeers } from './warm-copy.js';
import { DnsPool } from './discovery.js';
import { Membership, samePlacement, type MembershipHost, type MigrationProgress } from './membership.js';
import { Ejections } from './ejections.js';
import { applyLag, addCollector, leaseHeld, queueJobs, serverUp, verifyDivergentKeys } from '../observability/metrics.js';
import { verify } from '../verify/verifier.js';
import { datacenterDepth } from '../fanout/topology.js';
import { CountingWriter } from './counting-writer.js';
import { deleteForeignKeys } from './foreign-keys.js';

export type WorkerState = LifecycleState;

/**
 * A job's ops are decoded and applied this many at a time: a job of any size costs the same
 * bounded memory and never holds the event loop for long (the tailer's jobs hold at most
 * tailer.batchMaxOps, 5,000 by default, so most are one slice).
 */
const APPLY_SLICE_OPS = 5_000;

/** Flush records expire after a week. */
const FLUSH_RECORD_TTL_S = 7 * 24 * 3600;

/**
 * Records a job as applied (inside Lease.fenced: KEYS[1]/ARGV[1] are the lease's).
 * KEYS[2] applied hash, KEYS[3..] flush records; ARGV[2] partition, ARGV[3] epoch,
 * ARGV[4] t ('' = unchanged), ARGV[5] flush record TTL, ARGV[6] the job's payload key ('' =
 * none), ARGV[7] this data center: its field goes, and the last data center deletes the payload.
 */
const RECORD_PROGRESS = `
if ARGV[6] ~= '' then
  redis.call('HDEL', ARGV[6], ARGV[7])
  if redis.call('HLEN', ARGV[6]) <= 1 then redis.call('DEL', ARGV[6]) end
end
if ARGV[4] ~= '' then
  local cur = redis.call('HGET', KEYS[2], ARGV[2])
  local e, t = nil, nil
  if cur then e, t = string.match(cur, '^(.*):(%d+)$') end
  if not (e == ARGV[3] and tonumber(t) >= tonumber(ARGV[4])) then
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. ARGV[4])
  end
end
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[5])
end
return 1`;

/** Forgets a server that joins or leaves: KEYS[1] server states, KEYS[2..3] its missed ops; ARGV[1] its address. */
const FORGET_SERVER = `redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('DEL', KEYS[2], KEYS[3]) return 1`;

/** Sets a value (under the lease). */
const SAVE_VALUE = `redis.call('SET', KEYS[1], ARGV[1]) return 1`;

/** Records a server's state (under the lease: a stale worker group must not overwrite it). */
const SAVE_SERVER_STATE = `redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1`;

/** A server's state as recorded in Redis (`<prefix>:servers:<dc>`). */
export type ServerState = SavedServerState & { since: string };

export function serverStateOf(raw: string | undefined): ServerState | undefined {
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as ServerState;
  } catch {
    return undefined;
  }
}

interface Watermark {
  epoch: string;
  t: number;
}

export interface DatacenterWorkerOptions {
  logger: Logger;
  writerFactory?: WriterFactory;
  /** The site it belongs to (metrics). */
  site?: string;
}

export interface DatacenterWorkerEvents {
  state: [WorkerState];
  /** A job was applied on every server of the data center. */
  applied: [{ partition: number; ops: number; skipped: number }];
  fatal: [Error];
}

export class DatacenterWorker extends EventEmitter<DatacenterWorkerEvents> {
  private readonly logger: Logger;
  private readonly redis: Redis;
  private readonly keys: RedisKeys;
  private readonly lease: Lease;
  /**
   * Right before any write leaves for memcached: only while this group holds its lease (see
   * docs/decisions/0020 for why the successor can never overlap with it).
   */
  private readonly fence = (): void => this.lease.check();
  private readonly deadLetters: DeadLetterStore;
  private readonly factory: WriterFactory;
  private readonly site: string;
  private readonly stopCollecting: () => void;
  private verifyTimer: NodeJS.Timeout | undefined;
  /** Each server's own stop (it may leave the data center before the worker stops). */
  private readonly channelAborts = new Map<ServerChannel, AbortController>();
  /** ketama with ejectDeletes: the servers readers may have ejected. */
  private readonly ejections: Ejections | undefined;
  /** Warms every healthy server that is missing keys, once that can be done completely. */
  private readonly rewarmer: Rewarmer | undefined;
  /** Moves keys when the servers change; made by start(), with the placement found there. */
  private membership!: Membership;
  /** The placement recorded in Redis (what the servers hold). */
  private spec: DatacenterConfig;
  /** The data center as the config (or its DNS name) wants it. */
  private wanted: DatacenterConfig;
  /** Looks up the servers of a data center found through DNS. */
  private pool: DnsPool | undefined;
  private readonly applier: OpApplier;
  private readonly abort = new AbortController();
  private readonly life: Lifecycle;
  private readonly workers: Worker[] = [];
  private readonly watermarks = new Map<number, Watermark>();
  private readonly restarts: RedisRestartDetector;
  /** Catching up with a Redis that restarted or failed over (see recoverAfterRedisChange); jobs wait for it. */
  private recovering: Promise<void> = Promise.resolve();
  /** The job BullMQ handed each partition, from the moment it is handed over. */
  private readonly handed = new Map<number, string | undefined>();
  /** The job each partition is working on, for a graceful shutdown. */
  private readonly inProgress = new Map<number, Promise<void>>();
  readonly stats = { jobs: 0, ops: 0, skipped: 0, deadLetters: 0 };

  constructor(
    private readonly config: ResolvedConfig,
    readonly dc: string,
    opts: DatacenterWorkerOptions,
  ) {
    super();
    const dcConfig = config.datacenters[dc];
    if (!dcConfig) throw new McreplError('UNKNOWN_DATACENTER', `no data center named '${dc}' in the config (known: ${Object.keys(config.datacenters).join(', ')})`);
    this.logger = opts.logger.child({ dc });
    this.life = new Lifecycle('data-center worker', this.logger, (s) => this.emit('state', s));
    this.keys = new RedisKeys(config.redis.prefix);
    this.redis = connectRedis(config.redis, `worker-${dc}`);
    this.redis.on('error', (err) => this.logger.warn({ err: errorMessage(err) }, 'redis connection error'));
    this.restarts = new RedisRestartDetector(this.redis, this.logger);
    this.restarts.on('restarted', () => {
      for (const c of this.channels) c.requireFlush();
      this.recovering = this.recoverAfterRedisChange();
    });
    this.lease = new Lease(this.redis, this.keys.workerLease(dc), config.worker.leaseTtlMs, this.logger);
    this.lease.on('lost', (err) => this.fail(err));
    this.deadLetters = new DeadLetterStore(this.redis, this.keys, config.deadLetters.maxEntries);
    const factory = opts.writerFactory ?? writerFactoryFor(config.memcached.writer, config.memcached.username);
    // Every op a server takes is counted (mcrepl_ops_applied_total).
    this.factory = (address, o) => new CountingWriter(factory(address, o), dc);
    this.site = opts.site ?? config.site ?? 'default';
    this.stopCollecting = addCollector(async () => {
      this.channels.forEach((c) => serverUp.set({ dc, server: c.address }, c.health === 'healthy' ? 1 : 0));
      leaseHeld.set({ role: 'worker', name: dc }, this.lease.isHeld ? 1 : 0);
      if (this.life.state !== 'running') return;
      const depth = await datacenterDepth(this.redis, this.keys, dc, config.partitions);
      for (const [state, n] of Object.entries(depth)) queueJobs.set({ dc, state }, n);
    });
    this.spec = dcConfig;
    this.wanted = dcConfig;
    // A complete server back in service: any peer that is missing keys is warmed again from it.
    // Not under SASL, where nothing can be copied (see warm()).
    this.rewarmer = config.memcached.username === undefined ? new Rewarmer(() => this.applier.placementNow) : undefined;
    if (dcConfig.routing === 'ketama' && dcConfig.ejectDeletes) {
      // The sweep never overlaps a change of servers (it judges keys by the placement it sees).
      this.ejections = new Ejections(() => this.channels, dcConfig.readerRetryMs, () => void this.membership.exclusive(() => this.deleteFallbackFills()));
    }
    // The servers are put in place by start() (those last placed on, which a change of servers
    // may have left different from the config's).
    this.applier = new OpApplier([], new ReplicateRoute([]), {
      logger: this.logger,
      signal: this.abort.signal,
      ...(this.ejections ? { ejected: (channels) => this.ejections!.current(channels) } : {}),
    });
  }

  /** The servers of the data center now (those of a change under way included). */
  private get channels(): readonly ServerChannel[] {
    return this.applier.channels;
  }

  /** Which servers get which op, and which hold which keys. */
  get route(): Route {
    return this.applier.route;
  }

  /** A channel for one server, stopped on its own when the server leaves. */
  private makeChannel(address: string): ServerChannel {
    const { config } = this;
    const own = new AbortController();
    this.abort.signal.addEventListener('abort', () => own.abort(this.abort.signal.reason), { once: true });
    const c = new ServerChannel(
      this.factory(address, {
        timeoutMs: config.memcached.timeoutMs,
        connectTimeoutMs: config.memcached.connectTimeoutMs,
        logger: this.logger,
        username: config.memcached.username,
        password: config.memcached.password,
        fence: this.fence,
      }),
      {
        logger: this.logger,
        store: { save: (a, state) => this.saveServerState(a, state) },
        missed: new RedisMissedOpStore(this.redis, this.keys, this.dc, address, config.worker.missedOpsMaxKeys, config.worker.missedOpsMaxBytes, (sc, k, a) => this.lease.runFenced(sc, k, a)),
        signal: own.signal,
        onRefused: (r) => this.recordRefusals(r),
        probeIntervalMs: config.worker.probeIntervalMs,
        checkIntervalMs: config.worker.probeIntervalMs * 4,
        settleMs: config.worker.settleMs,
        warm: (target, mayWait) => this.warm(target, mayWait),
        warmWaitMs: config.worker.warmWaitMs,
      },
    );
    this.channelAborts.set(c, own);
    this.rewarmer?.watch(c);
    this.ejections?.watch(c);
    return c;
  }

  private membershipHost(): MembershipHost {
    return {
      logger: this.logger,
      signal: this.abort.signal,
      fence: this.fence,
      timeoutMs: this.config.memcached.timeoutMs * 5,
      canCopy: this.config.memcached.username === undefined,
      placement: () => this.applier.placementNow,
      setPlacement: (p) => this.applier.setPlacement(p),
      watchOps: (fn) => this.applier.watch(fn),
      join: async (address) => {
        // Whatever mcrepl knew of it (from an earlier time in this data center) is stale.
        await this.lease.runFenced(FORGET_SERVER, [this.keys.servers(this.dc), this.keys.missed(this.dc, address), `${this.keys.missed(this.dc, address)}:bytes`], [address]);
        const c = this.makeChannel(address);
        c.startFlushed();
        return c;
      },
      leave: async (c) => {
        c.stop();
        this.channelAborts.get(c)?.abort(new McreplError('CLOSED', `${c.address} left the data center`));
        this.channelAborts.delete(c);
        await c.writer.close().catch(() => undefined);
        await this.lease.runFenced(FORGET_SERVER, [this.keys.servers(this.dc), this.keys.missed(this.dc, c.address), `${this.keys.missed(this.dc, c.address)}:bytes`], [c.address]);
      },
      saveSpec: async (spec) => {
        await this.lease.runFenced(SAVE_VALUE, [this.keys.ring(this.dc)], [JSON.stringify(spec)]);
        this.spec = spec;
      },
      saveProgress: async (p) => {
        await this.lease.runFenced(SAVE_VALUE, [this.keys.migration(this.dc)], [JSON.stringify(p)]);
      },
    };
  }

  /**
   * The data center's servers as the config now lists them (SIGHUP, or a DNS name that resolves
   * to other addresses): keys move to their new servers (membership.ts). Resolves once the
   * change is done.
   */
  reconfigure(dcConfig: DatacenterConfig): Promise<void> {
    // Not running yet (a standby, say): start() takes it from here.
    if (this.life.state !== 'running') {
      this.wanted = dcConfig;
      return Promise.resolve();
    }
    if (dcConfig.routing === 'ketama' && dcConfig.discover && dcConfig.servers.length === 0) {
      // The config of a data center found through DNS (read again): look its name up now.
      this.pool?.stop();
      const pool = (this.pool = new DnsPool(dcConfig, this.logger, (dc) => void this.reconfigure(dc)));
      return pool.lookup().then((found) => {
        if (!found || this.pool !== pool) return;
        pool.start(found.servers);
        return this.reconfigure(found);
      });
    }
    if (dcConfig.servers.length === 0) return Promise.resolve();
    this.wanted = dcConfig;
    return this.membership.change(dcConfig);
  }

  /** The servers wanted now: the config's, or those its DNS name resolves to (or, if it cannot be looked up, those last placed on). */
  private async wantedNow(saved: DatacenterConfig | undefined): Promise<DatacenterConfig> {
    const w = this.wanted;
    if (w.routing !== 'ketama' || !w.discover) return w;
    this.pool = new DnsPool(w, this.logger, (dc) => void this.reconfigure(dc));
    const found = await this.pool.lookup();
    if (found) return found;
    if (saved) return saved;
    throw new McreplError('NO_SERVERS', `the DNS name ${w.discover.dns} of data center '${this.dc}' gives no server, and no earlier list of its servers is recorded`, { retriable: true });
  }

  get state(): WorkerState {
    return this.life.state;
  }

  async start(): Promise<void> {
    await this.life.acquire(this.lease, this.abort.signal);
    try {
      const topology = await readTopology(this.redis, this.keys);
      if (topology && topology.partitions !== this.config.partitions) {
        throw new McreplError(
          'TOPOLOGY_MISMATCH',
          `the tailer fans out to ${topology.partitions} partitions but this worker group is configured with partitions=${this.config.partitions}; use the same value everywhere`,
        );
      }
      if (topology && !topology.datacenters.includes(this.dc)) {
        this.logger.warn({ dc: this.dc, fedByTailer: topology.datacenters }, 'the tailer does not feed this data center (add it to the tailer config)');
      }
      await this.loadWatermarks();
      // The servers the keys were last placed on (a change of servers may be unfinished).
      const [savedSpec, savedProgress] = await Promise.all([this.redis.get(this.keys.ring(this.dc)), this.redis.get(this.keys.migration(this.dc))]);
      const saved = savedSpec ? (JSON.parse(savedSpec) as DatacenterConfig) : undefined;
      const wanted = await this.wantedNow(saved);
      const placed = saved ?? wanted;
      if (!savedSpec) await this.lease.runFenced(SAVE_VALUE, [this.keys.ring(this.dc)], [JSON.stringify(wanted)]);
      this.spec = placed;
      this.membership = new Membership(this.membershipHost(), placed);
      const route = createRoute(placed);
      await this.applier.setPlacement({ channels: route.servers.map((a) => this.makeChannel(a)), route });
      // Each server picks up where the previous worker left it (missed ops, flush needed); one
      // without a record is complete only if this data center has applied nothing yet.
      const serverStates = await this.redis.hgetall(this.keys.servers(this.dc));
      const hasHistory = this.watermarks.size > 0;
      await Promise.all(this.channels.map((c) => c.start(serverStateOf(serverStates[c.address]), hasHistory)));
      this.rewarmer?.check();
      for (let p = 0; p < this.config.partitions; p++) await this.recoverOrphans(p);
      for (let p = 0; p < this.config.partitions; p++) {
        const w = new Worker<JobData>(this.keys.queueName(this.dc, p), (job) => this.processQueued(p, job), {
          connection: this.redis,
          prefix: this.keys.prefix,
          concurrency: 1,
          autorun: false,
          // A job must never be failed for stalling: that would drop its ops.
          maxStalledCount: Number.MAX_SAFE_INTEGER,
          lockDuration: 30_000,
        });
        w.on('error', (err) => this.logger.warn({ partition: p, err: errorMessage(err) }, 'queue consumer error'));
        w.on('failed', (job, err) => this.logger.error({ partition: p, job: job?.id, err: errorMessage(err) }, 'job failed; its ops were not applied'));
        this.workers.push(w);
        void w.run().catch((err) => this.fail(err instanceof Error ? err : new Error(String(err))));
      }
      this.life.set('running');
      this.verifyNow(this.config.verify.intervalS * 1000);
      const progress = savedProgress ? (JSON.parse(savedProgress) as MigrationProgress) : undefined;
      if (!samePlacement(placed, wanted)) void this.membership.change(wanted);
      else if (progress?.phase === 'cleaning') void this.membership.resumeCleanup(progress);
      this.pool?.start(wanted.servers);
    } catch (err) {
      if (this.abort.signal.aborted) throw err; // closed while starting: close() finishes the job
      await this.teardown();
      this.life.set('failed');
      throw err;
    }
  }

  private async loadWatermarks(): Promise<void> {
    const saved = await this.redis.hgetall(this.keys.applied(this.dc));
    for (const [p, v] of Object.entries(saved)) {
      const i = v.lastIndexOf(':');
      this.watermarks.set(Number(p), { epoch: v.slice(0, i), t: Number(v.slice(i + 1)) });
    }
  }

  /**
   * After Redis restarted or failed over to a replica, it may lack the last things this
   * process wrote there: watermarks, flush records and job completions. The watermarks this
   * process holds stay (what it applied, it applied: replayed ops at or below them are skipped,
   * so no key goes back to an older value), and flush markers are recorded even when skipped
   * (see process). What remains is, as at start, to finish first the jobs Redis still lists as
   * active (their completion was lost), before any newer job: BullMQ would only notice them as
   * stalled once their lock expires, and run them after newer ones. The consumers stop taking
   * jobs meanwhile; a job handed over before waits, and then goes on.
   */
  private async recoverAfterRedisChange(): Promise<void> {
    for (let delay = 200; ; delay = Math.min(delay * 2, 5_000)) {
      try {
        await Promise.all(this.workers.map((w) => w.pause(true)));
        this.logger.warn('Redis changed: finishing the jobs it lists as unfinished before any other');
        for (let p = 0; p < this.config.partitions; p++) await this.recoverOrphans(p, this.handed.get(p));
        for (const w of this.workers) w.resume();
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.logger.warn({ err: errorMessage(err), retryInMs: delay }, 'could not catch up with Redis after its restart; retrying');
        await sleep(delay, this.abort.signal).catch(() => undefined);
      }
    }
  }

  /**
   * A job still "active" when we start was being processed by a worker that died (the lease
   * guarantees no live one exists). It is older than everything waiting, so it goes first.
   */
  private async recoverOrphans(p: number, except?: string): Promise<void> {
    const queue = new Queue<JobData>(this.keys.queueName(this.dc, p), { connection: this.redis, prefix: this.keys.prefix });
    try {
      const orphans = ((await queue.getJobs(['active'], 0, -1, true)) as Job<JobData>[]).filter((j) => j.id !== except);
      for (const job of orphans.sort((a, b) => a.timestamp - b.timestamp)) {
        this.logger.warn({ partition: p, job: job.id }, 'resuming a job left unfinished by a previous worker');
        await this.process(p, job.data, job.id);
        // Token '0': complete without the lock, which died with the previous worker.
        await job.moveToCompleted(undefined, '0', false);
      }
    } finally {
      await queue.close();
    }
  }

  private track(p: number, work: Promise<void>): Promise<void> {
    this.inProgress.set(p, work);
    return work.finally(() => this.inProgress.delete(p));
  }

  /** Applies one job's ops, a slice at a time; throws if it cannot (shutdown, or a bug). */
  private async process(p: number, data: JobData, jobId?: string, pipelined = false): Promise<void> {
    let epoch: string;
    let slices: Iterable<Op[]> = [];
    let payloadKey = '';
    let lastT: number | undefined;
    let coalesced = false;
    let asDeletes = false;
    const wm = this.watermarks.get(p);
    try {
      const job = readJob(data);
      epoch = job.epoch;
      coalesced = job.coalesced;
      asDeletes = job.asDeletes;
      if ('inline' in job) {
        slices = sliceJobOps(job.inline, job.count, APPLY_SLICE_OPS);
      } else {
        payloadKey = this.keys.payload(job.payload);
        lastT = job.lastT;
        const buf = await this.redis.hgetBuffer(payloadKey, 'd');
        if (buf) slices = sliceJobOps(buf, job.count, APPLY_SLICE_OPS);
        // A replayed job whose ops were all applied already may find its payload released by
        // the last data center to apply it; only one with ops to apply needs it.
        else if (!(wm && wm.epoch === epoch && job.lastT <= wm.t)) throw corrupt(`its ops (${payloadKey}) are gone from Redis`);
      }
    } catch (err) {
      if ((err as McreplError).code !== 'JOB_CORRUPT') throw err;
      // A damaged job can never be read; keep its reason and go on rather than block the
      // partition forever. (An unsupported format version stops the group instead: upgrading
      // the workers makes it readable.)
      this.logger.error({ partition: p, job: jobId, err: errorMessage(err) }, 'corrupt job dead-lettered');
      await this.deadLetters.add([{ at: new Date().toISOString(), stage: 'worker', dc: this.dc, reason: errorMessage(err), op: { job: jobId ?? null, partition: p, payloadBytes: typeof data?.b === 'string' ? data.b.length : null, payload: data?.p ?? null } }]);
      this.stats.deadLetters++;
      return;
    }
    // Ops at or below the watermark were applied already (a replay); the rest, split in one pass.
    // Flush markers are recorded even then: the flush's deletes, before them in this partition,
    // were applied, and the record of it may be what a Redis restart or failover lost (the
    // watermark having come back, or been re-sent, without it). Recording it again is harmless.
    const floor = wm && wm.epoch === epoch ? wm.t : -Infinity;
    const markers: FlushMarkerOp[] = [];
    let fresh = 0;
    let last: number | undefined;
    for (const ops of slices) {
      const writes: WriteableOp[] = [];
      for (const op of ops) {
        if (op.kind === 'flush' && !asDeletes) markers.push(op);
        if (op.t <= floor) continue;
        fresh++;
        if (op.kind !== 'flush') writes.push(asDeletes && op.kind === 'set' ? { kind: 'delete', t: op.t, nsId: op.nsId, key: op.key } : op);
      }
      last = ops[ops.length - 1]?.t ?? last;
      // A subset of distinct-key ops still concerns distinct keys; a slice of a job that was
      // not coalesced is coalesced on its own (slices are applied one after the other).
      await this.applier.apply(writes, coalesced);
    }
    last = lastT ?? last;
    const advance = last !== undefined && (!wm || wm.epoch !== epoch || last > wm.t);
    // Only the lease holder records progress, and the watermark never moves back. A queued job
    // does not wait for the reply: BullMQ's completion of the job, and its fetch of the next
    // one, follow on the same connection, so Redis runs them after it and a job costs one round
    // trip instead of two (decision 0022). A failure still stops the group, as when awaited; a
    // watermark that stayed behind only makes a replay re-apply ops it had applied, in order.
    // A flush's record is waited for: `mcrepl flush` waits for it.
    const recorded = this.lease.fenced(
      RECORD_PROGRESS,
      [this.keys.applied(this.dc), ...markers.map((m) => this.keys.flushDone(m.flushId, m.token, this.dc))],
      [String(p), epoch, advance ? String(last) : '', String(FLUSH_RECORD_TTL_S), payloadKey, this.dc],
    );
    if (!pipelined || markers.length > 0) await recorded;
    else recorded.catch((err: unknown) => !this.abort.signal.aborted && this.fail(err instanceof Error ? err : new Error(String(err))));
    if (advance) this.watermarks.set(p, { epoch, t: last! });
    for (const marker of markers) this.logger.debug({ partition: p, flushId: marker.flushId, nsId: marker.nsId }, 'flush marker applied');
    if (fresh > 0 && typeof data.ts === 'number') applyLag.observe({ site: this.site, dc: this.dc }, Math.max(0, Date.now() - data.ts) / 1000);
    this.stats.jobs++;
    this.stats.ops += fresh;
    this.stats.skipped += data.n - fresh;
    this.emit('applied', { partition: p, ops: fresh, skipped: data.n - fresh });
  }

  /**
   * A job handed over by BullMQ. It must never fail (that would drop its ops): if it cannot
   * finish, because we are shutting down or because of a bug, it never settles, stays active,
   * and the next start resumes it first.
   */
  private processQueued(p: number, job: Job<JobData>): Promise<void> {
    this.handed.set(p, job.id);
    const work = (async () => {
      // A job taken from a Redis that restarted or failed over waits until this process has
      // caught up with that Redis (watermarks, unfinished jobs).
      await this.restarts.settled();
      await this.recovering;
      await this.process(p, job.data, job.id, true);
    })().finally(() => {
      if (this.handed.get(p) === job.id) this.handed.delete(p);
    });
    return this.track(
      p,
      work.catch((err: unknown) => {
        if (!this.abort.signal.aborted) this.fail(err instanceof Error ? err : new Error(String(err)));
        return new Promise<void>(() => undefined);
      }),
    );
  }

  /** Server state, kept in Redis so that it outlives this process (and for `mcrepl status`). */
  private async saveServerState(address: string, state: SavedServerState): Promise<void> {
    for (;;) {
      try {
        await this.lease.runFenced(SAVE_SERVER_STATE, [this.keys.servers(this.dc)], [address, JSON.stringify({ ...state, since: new Date().toISOString() })]);
        return;
      } catch (err) {
        this.abort.signal.throwIfAborted();
        if (err instanceof LeaseLostError) throw err;
        this.logger.warn({ server: address, err: errorMessage(err) }, 'could not record server state; retrying');
        await sleep(500, this.abort.signal);
      }
    }
  }

  /** Health of each server as this worker sees it. */
  serverHealth(): { address: string; health: string }[] {
    return this.channels.map((c) => ({ address: c.address, health: c.health }));
  }

  /**
   * Copies the keys a server that came back empty, or was flushed, should hold from its peers
   * (warm-copy.ts). Ops arriving meanwhile are kept for the target and replayed after this, so
   * they win over what is copied.
   */
  private warm(target: ServerChannel, mayWait: boolean): Promise<WarmResult> {
    // Copying uses the text (meta) protocol, which memcached turns off under SASL (-S): such a
    // server starts empty (flushed) and fills from new writes.
    if (this.config.memcached.username !== undefined) return Promise.resolve('none');
    // A server that joins, flushed before it is placed: the change of servers copies its keys.
    if (!this.channels.includes(target)) return Promise.resolve('alone');
    return warmFromPeers(target, this.channels, this.route, mayWait, {
      timeoutMs: this.config.memcached.timeoutMs * 5,
      fence: this.fence,
      signal: this.abort.signal,
      log: (keys, peers, complete) => this.logger.info({ server: target.address, peers, keys, complete }, 'server warmed from its peers'),
    });
  }

  /**
   * The continuous verification (`verify.sampleKeys` > 0): a sample of the registry checked on
   * this data center's servers every `verify.intervalS`, into mcrepl_verify_divergent_keys.
   */
  private verifyNow(delayMs: number): void {
    const { sampleKeys } = this.config.verify;
    if (sampleKeys === 0 || this.abort.signal.aborted) return;
    this.verifyTimer = setTimeout(() => {
      void verify(this.config, { sample: sampleKeys, datacenters: [this.dc], settleTimeoutMs: 30_000 })
        .then((r) => {
          const keys = new Set(r.divergent.map((d) => d.keyHex)).size;
          verifyDivergentKeys.set({ dc: this.dc }, keys);
          if (keys > 0) this.logger.warn({ keys, examples: r.divergent.slice(0, 5).map((d) => `${d.server} ${d.key}: ${d.problem}`) }, 'verification found keys that differ from the registry (mcrepl verify --repair)');
        })
        .catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, 'the sampled verification failed; trying again later'))
        .finally(() => this.verifyNow(this.config.verify.intervalS * 1000));
    }, delayMs);
    this.verifyTimer.unref();
  }

  /**
   * Every server is back and readers read them all again: what readers filled on other servers
   * for their keys meanwhile goes (foreign-keys.ts). If this fails, the next return tries again.
   */
  private async deleteFallbackFills(): Promise<void> {
    // Listing a server's keys takes the text protocol, which memcached turns off under SASL.
    if (this.config.memcached.username !== undefined) return;
    try {
      const deleted = await deleteForeignKeys(this.channels, this.route, { timeoutMs: this.config.memcached.timeoutMs * 5, signal: this.abort.signal });
      this.logger.info({ deleted }, 'every server is back: deleted what readers had filled on other servers for their keys');
    } catch (err) {
      if (!this.abort.signal.aborted) this.logger.warn({ err: errorMessage(err) }, 'could not delete what readers filled on other servers for a returned server');
    }
  }

  private async recordRefusals(refusals: Refusal[]): Promise<void> {
    this.stats.deadLetters += refusals.length;
    const at = new Date().toISOString();
    for (;;) {
      try {
        await this.deadLetters.add(
          refusals.map((r) => ({
            at,
            stage: 'worker' as const,
            dc: this.dc,
            server: r.server,
            reason: r.reason,
            ...(r.keyDeleted ? { action: 'key deleted on this server instead' } : {}),
            op: { op: r.op.kind, nsId: r.op.nsId, key: printableKey(r.op.key), keyBytes: r.op.key.length, ...(r.op.kind === 'set' ? { valueBytes: r.op.value.length } : {}) },
            retry: {
              kind: r.op.kind,
              nsId: r.op.nsId,
              key: r.op.key.toString('hex'),
              ...(r.op.kind === 'set'
                ? { valueBytes: r.op.value.length, expiresAt: r.op.expiresAt, ...(r.op.value.length <= this.config.deadLetters.keepValueBytes ? { value: r.op.value.toString('base64') } : {}) }
                : {}),
            },
          })),
        );
        return;
      } catch (err) {
        this.logger.warn({ err: errorMessage(err) }, 'could not record dead letters; retrying');
        await sleep(500, this.abort.signal);
      }
    }
  }

  private fail(err: Error): void {
    if (this.life.state === 'failed' || this.life.state === 'stopped') return;
    this.logger.error({ err: errorMessage(err), code: (err as McreplError).code }, 'data-center worker failed');
    this.life.set('failed');
    this.abort.abort(err);
    void this.teardown()
      .catch(() => undefined)
      .finally(() => this.emit('fatal', err));
  }

  /**
   * Stops taking jobs, lets the jobs in hand finish for up to `worker.shutdownGraceMs`, then
   * leaves whatever is still unfinished active for the next start.
   */
  async close(): Promise<void> {
    if (this.life.state === 'stopped' || this.life.state === 'failed') return;
    this.life.set('stopping');
    await Promise.all(this.workers.map((w) => w.pause(true).catch(() => undefined)));
    const grace = new AbortController();
    await Promise.race([Promise.allSettled([...this.inProgress.values()]), sleep(this.config.worker.shutdownGraceMs, grace.signal).catch(() => undefined)]);
    grace.abort();
    await this.teardown();
    this.life.set('stopped');
  }

  private tornDown = false;
  private async teardown(): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    this.stopCollecting();
    clearTimeout(this.verifyTimer);
    if (!this.abort.signal.aborted) this.abort.abort(new McreplError('CLOSED', 'worker closed'));
    await Promise.all(this.workers.map((w) => w.close(true).catch(() => undefined)));
    const all = [...this.channelAborts.keys()];
    for (const c of all) c.stop();
    this.ejections?.stop();
    this.pool?.stop();
    await Promise.all(all.map((c) => c.writer.close().catch(() => undefined)));
    await this.lease.release();
    this.redis.disconnect();
  }
}
