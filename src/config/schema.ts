/**
 * The configuration schema: the single source of truth for every option, its type and its
 * default. Types are inferred from it. See config/mcrepl.example.yaml for a commented example.
 */
import { z } from 'zod';
import { parseRingServer, type RingServer } from './ring-server.js';

const port = z.coerce.number().int().min(1).max(65535);
const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().min(0);
const bool = z.union([z.boolean(), z.stringbool()]);

/** `host:port` of one memcached server. */
export const serverAddress = z
  .string()
  .regex(/^[A-Za-z0-9_.-]+:\d{1,5}$/, 'expected host:port, e.g. 10.0.0.5:11211');

/** Data-center names appear in queue names and Redis keys, so they are kept simple. */
export const datacenterName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'data-center names are 1-32 characters of a-z, 0-9, _ and -, starting with a letter or digit');

const secretFields = {
  /** Password inline (prefer `passwordFile` or the environment; never pass it on a command line). */
  password: z.string().optional(),
  /** File whose first line is the password (e.g. a mounted secret). */
  passwordFile: z.string().optional(),
};

/**
 * A MySQL account of its own for one role (least privilege). `mcrepl schema install` creates it
 * (with `host` as its host part) and grants exactly what the role needs; the component of that
 * role then connects with it instead of mysql.user.
 */
export const mysqlAccountSchema = z.strictObject({
  user: z.string().min(1).max(80),
  ...secretFields,
  /** Host part of the account (`'user'@'host'`), e.g. the application servers' subnet. */
  host: z.string().min(1).default('%'),
});

export const mysqlSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: port.default(3306),
  /** The account `schema install` runs as (it creates the others); the default for every role. */
  user: z.string().min(1).default('mcrepl'),
  ...secretFields,
  /** The tailer's account: REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR), SELECT on the schema. */
  tailer: mysqlAccountSchema.optional(),
  /** The operators' account (flush, status, verify): SELECT and EXECUTE on the schema. */
  admin: mysqlAccountSchema.optional(),
  /** The applications' account: EXECUTE on the procedures and INSERT on mc_storage, nothing else. */
  writer: mysqlAccountSchema.optional(),
  /** Schema holding mc_storage, mc_stored_keys and the procedures. */
  database: z.string().regex(/^[A-Za-z0-9_$]{1,64}$/, 'expected a plain schema name').default('memcached'),
  /**
   * server_id the tailer presents to MySQL when it reads the binlog. Must differ from the
   * server's own and from every replica's.
   */
  serverId: z.coerce.number().int().min(1).max(4294967295).default(5_101_987),
  connectTimeoutMs: positiveInt.default(10_000),
});

/** TLS to Redis (or to the sentinels): `true` (system CAs), or files for a private CA and client certificates. */
const redisTlsSchema = z.union([
  bool,
  z.strictObject({
    caFile: z.string().optional(),
    certFile: z.string().optional(),
    keyFile: z.string().optional(),
    /** Name to check the server certificate against (default: host). */
    servername: z.string().optional(),
    rejectUnauthorized: bool.default(true),
  }),
]);

/**
 * Redis Sentinel: mcrepl asks the sentinels which server is the primary of the group `name`
 * and connects to it; after a failover it reconnects to the promoted replica by itself
 * (docs/decisions/0017-redis-sentinel.md).
 */
export const redisSentinelSchema = z.strictObject({
  /** The master group name the sentinels monitor (`sentinel monitor <name> ...`). */
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected the master group name of `sentinel monitor <name> ...` (A-Z, a-z, 0-9, _ . -)'),
  /** `host:port` of every sentinel (26379 is Sentinel's usual port); one that answers is enough. */
  nodes: z
    .array(z.string().regex(/^[A-Za-z0-9_.-]+:\d{1,5}$/, 'expected host:port, e.g. 10.0.0.5:26379'))
    .min(1, 'list at least one sentinel (three or more on separate machines for a real quorum)'),
  /** ACL user on the sentinels, if they require one (`user` in sentinel.conf). */
  username: z.string().optional(),
  /** The sentinels' own password (`requirepass` in sentinel.conf), not the Redis servers'. */
  ...secretFields,
  /** Connect to the sentinels with TLS (same forms as redis.tls, which covers the Redis servers). */
  tls: redisTlsSchema.default(false),
});

export const redisSchema = z.strictObject({
  /**
   * The Redis server. Ignored when `sentinel` is set: the sentinels name the primary (so a
   * config printed by `mcrepl config`, which shows these defaults, can be used as it is).
   */
  host: z.string().min(1).default('127.0.0.1'),
  port: port.default(6379),
  username: z.string().optional(),
  ...secretFields,
  db: nonNegativeInt.default(0),
  /** Connect with TLS: `true` (system CAs), or files for a private CA and client certificates. */
  tls: redisTlsSchema.default(false),
  /** Find the primary through Redis Sentinel and follow its failovers (instead of host/port). */
  sentinel: redisSentinelSchema.optional(),
  /** Prefix of every Redis key and BullMQ queue mcrepl uses; two deployments on one Redis need different prefixes. */
  prefix: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1-64 characters of A-Z, a-z, 0-9, _ . -').default('mcrepl'),
});

const ringServerSpec = z.string().transform((spec, ctx) => {
  try {
    return parseRingServer(spec);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `${(err as Error).message}, e.g. 10.0.0.5:11211:1 cache-a` });
    return z.NEVER;
  }
});

/** Options that only a ketama data center takes. */
const KETAMA_ONLY = ['hash', 'replicas', 'backup', 'ejectDeletes', 'readerRetryMs', 'discover'] as const;

export const datacenterSchema = z
  .strictObject({
    /**
     * How keys are placed on this data center's servers.
     * - `replicate`: every server gets every key (redundancy; reads survive a dead server).
     * - `ketama`: each key on the server of a ketama ring where the readers' client looks for it
     *   (twemproxy `distribution: ketama`, libmemcached KETAMA_WEIGHTED, pylibmc
     *   `ketama_weighted`), and on the next `replicas - 1` distinct servers of the ring.
     */
    routing: z.enum(['replicate', 'ketama']).default('replicate'),
    /**
     * The memcached servers of this data center: `host:port`; with `ketama`, in twemproxy's
     * syntax `host:port[:weight] [name]` (the points of a named server are hashed from its name).
     */
    servers: z.array(z.string()).default([]),
    /**
     * ketama: the servers are the addresses a DNS name resolves to (A and AAAA records), looked
     * up again every `refreshS`; when they change, keys move to their new servers.
     */
    discover: z
      .strictObject({
        /** The name whose records list the servers. */
        dns: z.string().min(1),
        /** The servers' port. */
        port: port.default(11211),
        /** Weight of every server found. */
        weight: positiveInt.default(1),
        refreshS: positiveInt.default(30),
        /** A DNS server to ask (`host:port`) instead of the system's. */
        resolver: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port').optional(),
      })
      .optional(),
    /** ketama: the key hash the readers use: `fnv1a_64` (twemproxy's default) or `md5` (libmemcached, pylibmc, PHP). */
    hash: z.enum(['fnv1a_64', 'md5']).optional(),
    /** ketama: each key on this many distinct servers (the ring's next ones after its own). */
    replicas: positiveInt.optional(),
    /** ketama: servers that get every key (magent's `-b`), outside the ring. */
    backup: z.array(serverAddress).optional(),
    /**
     * ketama: while a server is down, a delete of each of its keys written meanwhile also goes to
     * the server a reader that ejects it (twemproxy `auto_eject_hosts`) falls back to, so that
     * the fallback never serves a value filled before the write. Default: on.
     */
    ejectDeletes: bool.optional(),
    /**
     * ketama: how long readers keep a server ejected before they try it again (twemproxy's
     * `server_retry_timeout`, libmemcached's retry timeout). The deletes of `ejectDeletes` go on
     * that long after a server returns; then what readers filled elsewhere for it is deleted.
     */
    readerRetryMs: positiveInt.optional(),
  })
  .transform((d, ctx) => {
    const addresses = (specs: readonly string[], at: string) =>
      specs.flatMap((spec, i) => {
        const r = (d.routing === 'ketama' ? ringServerSpec : serverAddress).safeParse(spec);
        if (r.success) return [typeof r.data === 'string' ? { address: r.data, weight: 1 } : r.data];
        for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', path: [at, i], message: issue.message });
        return [];
      });
    if (d.servers.length === 0 && !(d.routing === 'ketama' && d.discover)) ctx.addIssue({ code: 'custom', path: ['servers'], message: 'a data center needs at least one memcached server' + (d.routing === 'ketama' ? ' (or discover)' : '') });
    if (d.servers.length > 0 && d.discover) ctx.addIssue({ code: 'custom', path: ['discover'], message: "give either 'servers' or 'discover', not both" });
    const ring = addresses(d.servers, 'servers');
    const backup = d.backup ?? [];
    const seen = new Set<string>();
    for (const a of ring.map((s) => s.address)) {
      if (seen.has(a)) ctx.addIssue({ code: 'custom', path: ['servers'], message: `${a} is listed twice` });
      seen.add(a);
    }
    for (const a of backup) {
      if (seen.has(a)) ctx.addIssue({ code: 'custom', path: ['backup'], message: `${a} is listed twice (a backup is not one of the ring's servers)` });
      seen.add(a);
    }
    if (d.routing === 'replicate') {
      for (const k of KETAMA_ONLY) if (d[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: `'${k}' applies to routing: ketama only (this data center replicates every key to every server)` });
      return { routing: 'replicate' as const, servers: ring.map((s) => s.address) };
    }
    const names = new Set<string>();
    for (const s of ring) {
      if (s.name === undefined) continue;
      if (names.has(s.name)) ctx.addIssue({ code: 'custom', path: ['servers'], message: `the name '${s.name}' is given to two servers: their points would coincide` });
      names.add(s.name);
    }
    const replicas = d.replicas ?? 1;
    if (ring.length === d.servers.length && ring.length > 0 && replicas > ring.length) ctx.addIssue({ code: 'custom', path: ['replicas'], message: `replicas: ${replicas} needs at least that many servers (there are ${ring.length})` });
    return {
      routing: 'ketama' as const,
      /** As written, weight spelled out: `host:port:weight [name]` (ringOf parses them). */
      servers: ring.map((r) => `${r.address}:${r.weight}${r.name !== undefined ? ` ${r.name}` : ''}`),
      hash: d.hash ?? ('fnv1a_64' as const),
      replicas,
      backup,
      ejectDeletes: d.ejectDeletes ?? true,
      readerRetryMs: d.readerRetryMs ?? 30_000,
      ...(d.discover ? { discover: d.discover } : {}),
    };
  });

/** The ring of a ketama data center (its `servers`, parsed). */
export function ringOf(d: z.output<typeof datacenterSchema>): RingServer[] {
  return d.servers.map(parseRingServer);
}

/** Addresses of every server of a data center that workers write to: the ring's (or the replicated set), then the backups. */
export function serversOf(d: z.output<typeof datacenterSchema>): string[] {
  return d.routing === 'ketama' ? [...ringOf(d).map((r) => r.address), ...d.backup] : d.servers;
}

/**
 * A site: a data center, or several near each other, with its own Redis (queues, checkpoint,
 * leases), its own tailer reading a MySQL server close to it, and the worker groups of its data
 * centers (docs/decisions/0023-sites.md). Without `sites` the whole config is one site.
 */
export const siteSchema = z.strictObject({
  /**
   * This site's Redis. Options not given here come from the top-level `redis` (when the config
   * is read from a file or the environment), so a site usually names only its host.
   */
  redis: redisSchema,
  /**
   * The MySQL server this site's tailer reads the binlog of: a replica in the site (with
   * log_slave_updates) or the primary across the WAN. Default: `mysql`'s host and port (the
   * primary). Accounts and schema are `mysql`'s (they replicate).
   */
  source: z
    .strictObject({
      host: z.string().min(1),
      port: port.default(3306),
      /**
       * A replica this many transactions or more behind the primary (cut off, restarting, slow
       * to apply a backlog) is bypassed: once the tailer has read what the replica has, it reads
       * the primary's binlog instead, and goes back to the replica when the replica holds
       * everything it has read (docs/decisions/0024). 0: always the replica.
       */
      fallbackBehind: nonNegativeInt.default(10_000),
      /**
       * How this site reaches the primary for that fallback, when not at `mysql`'s host and
       * port (a name that resolves only in the primary's site, a tunnel). Default: `mysql`'s.
       */
      primary: z.strictObject({ host: z.string().min(1), port: port.default(3306) }).optional(),
    })
    .optional(),
  /** The data centers of this site (each named under `datacenters`, each in one site only). */
  datacenters: z.array(datacenterName).min(1, 'a site needs at least one data center'),
  /**
   * Whether this site's active tailer removes expired keys from the registry (a DELETE on the
   * primary, decision 0018). Default: only the first site listed does.
   */
  sweepRegistry: bool.optional(),
});

export const memcachedSchema = z.strictObject({
  /**
   * How workers write: `meta` (text protocol meta commands, pipelined; fastest), `memjs` (binary
   * protocol; needed for SASL), `auto` (meta, or memjs when a SASL username is set).
   */
  writer: z.enum(['auto', 'meta', 'memjs']).default('auto'),
  /** SASL (binary protocol) credentials, for servers started with -S. */
  username: z.string().optional(),
  ...secretFields,
  /** memcached's item size limit (-I); keep it equal to mc_settings.max_item_bytes. */
  maxItemBytes: positiveInt.default(1_048_576),
  /** Per-request timeout. */
  timeoutMs: positiveInt.default(2_000),
  /** Connection timeout. */
  connectTimeoutMs: positiveInt.default(2_000),
}).refine((m) => !(m.writer === 'meta' && m.username !== undefined), {
  message: "writer 'meta' cannot authenticate: memcached turns the text protocol off under SASL; use writer 'memjs' (or 'auto') with a username",
  path: ['writer'],
});

export const tailerSchema = z.strictObject({
  /** A batch becomes jobs once it holds this many ops... */
  batchMaxOps: positiveInt.default(5_000),
  /** ...or this many bytes of keys and values... */
  batchMaxBytes: positiveInt.default(8 * 1024 * 1024),
  /**
   * ...or this long after the previous batch (ms): while ops keep coming, at most one batch per
   * lingerMs (fewer, bigger jobs); the first op after a quiet spell goes out at once.
   */
  lingerMs: nonNegativeInt.default(5),
  /**
   * Adaptive job size per data center (src/fanout/pacer.ts): while a data center's queue has a
   * job waiting, its ops are held and go out as one bigger job when the queue is empty again,
   * or after this long at the most (0 = never hold: one job per batch for every data center).
   */
  holdMaxMs: nonNegativeInt.default(1_000),
  /** Pause reading the binlog while this many bytes of ops wait to be enqueued. */
  maxPendingBytes: positiveInt.default(8 * 1024 * 1024),
  /** Save the checkpoint at least this often while only other tables' transactions pass (ms). */
  checkpointIntervalMs: positiveInt.default(1_000),
  /** Reconnect backoff after a binlog connection error (ms). */
  reconnectInitialMs: positiveInt.default(200),
  reconnectMaxMs: positiveInt.default(10_000),
  /** Lease that keeps a single tailer active (ms). */
  leaseTtlMs: positiveInt.default(10_000),
  /** The server sends a heartbeat when the binlog is idle this long (ms). */
  heartbeatMs: positiveInt.default(2_000),
  /**
   * Nothing at all received (no event, no heartbeat) for this long means the connection died
   * silently: reconnect (ms).
   */
  stallTimeoutMs: positiveInt.default(10_000),
  /** A site reading a replica: how often the replica's and the primary's binlog ends are compared (ms). */
  sourceCheckMs: positiveInt.default(1_000),
});

export const workerSchema = z.strictObject({
  /** How often a server that is down is asked whether it is back (ms). */
  probeIntervalMs: positiveInt.default(500),
  /**
   * memjs writer only (SASL): when a server that was paused or cut off answers again, wait this
   * long before replaying its missed ops, so that requests it still holds from before land
   * first (ms). The meta writer knows when they have (docs/decisions/0020) and never waits.
   */
  settleMs: nonNegativeInt.default(1_000),
  /**
   * A server that came back empty waits up to this long for a peer that holds every key when
   * all its peers are down; then it starts with what a healthy peer has, or empty, and is warmed
   * again once a complete peer is healthy (ms).
   */
  warmWaitMs: nonNegativeInt.default(30_000),
  /** Missed ops kept per server while it is down (distinct keys; more → it is flushed on return). */
  missedOpsMaxKeys: positiveInt.default(100_000),
  /** ...and their bytes. */
  missedOpsMaxBytes: positiveInt.default(64 * 1024 * 1024),
  /** Lease that keeps a single worker group active per data center (ms). */
  leaseTtlMs: positiveInt.default(10_000),
  /** How long SIGTERM waits for the job in hand before leaving it for the next start (ms). */
  shutdownGraceMs: positiveInt.default(10_000),
});

/** The key registry (mc_stored_keys): the active tailer removes rows of keys that expired. */
export const registrySchema = z.strictObject({
  /**
   * How often the active tailer removes expired rows from the key registry (ms); 0 = never
   * (the registry then keeps a row for every key ever set until a flush or delete).
   */
  sweepIntervalMs: nonNegativeInt.default(60_000),
  /** Rows removed per DELETE, each its own short transaction; a sweep repeats while batches come back full. */
  sweepBatch: z.coerce.number().int().min(1).max(100_000).default(1_000),
  /**
   * A key's row is removed only this long after its expiry (s): memcached may hold the key a
   * little longer than MySQL's clock says (the TTL counts from the commit, not the statement;
   * clock skew), and a flush must still find it meanwhile.
   */
  sweepGraceS: z.coerce.number().int().min(0).max(2_592_000).default(600),
});

export const configSchema = z
  .object({
    mysql: mysqlSchema.prefault({}),
    redis: redisSchema.prefault({}),
    /**
     * Ops are spread over this many queues per data center by hash(key); each queue is
     * consumed in order by one consumer. Change it only while every queue is empty. More than
     * one only overlaps one job's round trips with another's (a data center's worker group is
     * one process): each partition splits a batch into one more job, so at live rates more
     * partitions mean more, smaller jobs and more lag (docs/decisions/0015).
     */
    partitions: z.coerce.number().int().min(1).max(1024).default(1),
    datacenters: z.record(datacenterName, datacenterSchema).refine((d) => Object.keys(d).length > 0, {
      message: 'at least one data center is required',
    }),
    /** Sites (optional): which data centers share which Redis and binlog source. */
    sites: z.record(datacenterName, siteSchema).optional(),
    /**
     * The site this process serves (`--site`). Needed by `tailer` and `run` when there are several
     * sites; `worker <dc>` finds the site of its data center.
     */
    site: datacenterName.optional(),
    memcached: memcachedSchema.prefault({}),
    tailer: tailerSchema.prefault({}),
    worker: workerSchema.prefault({}),
    registry: registrySchema.prefault({}),
    deadLetters: z
      .strictObject({
        /** Most recent dead letters kept in Redis (older ones are dropped, but still counted). */
        maxEntries: positiveInt.default(10_000),
        /**
         * A refused set's value is kept with its dead letter when it is this size or smaller, so
         * that `mcrepl dead-letters retry` can write it once the cause is fixed (0: never).
         */
        keepValueBytes: nonNegativeInt.default(65_536),
      })
      .prefault({}),
    memory: z
      .strictObject({
        /**
         * A long-running process (run, tailer, worker) lets its heap grow to what is live plus
         * this percent before V8 collects it again (V8's --heap-growing-percent), which keeps its
         * resident memory bounded during a drain (0 = V8's own factor, up to 300 %: 250+ MB of
         * RSS for the tailer in a 1M-op drain).
         */
        heapGrowingPercent: z.number().int().min(0).max(1000).default(30),
      })
      .prefault({}),
    /**
     * A continuous, sampled verification in each worker group (`mcrepl verify --sample` of its
     * data center) feeding `mcrepl_verify_divergent_keys`. Off while `sampleKeys` is 0.
     */
    verify: z
      .strictObject({
        sampleKeys: nonNegativeInt.default(0),
        intervalS: positiveInt.default(300),
      })
      .prefault({}),
    /**
     * Prometheus metrics, `/healthz` and `/readyz` over HTTP, served by each daemon (run,
     * tailer, worker). Off unless `port` is set (or --metrics-port).
     */
    metrics: z
      .strictObject({
        port: port.optional(),
        /** The address to listen on; 0.0.0.0 for a scraper on another host. */
        host: z.string().min(1).default('127.0.0.1'),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!c.sites) {
      if (c.site !== undefined) ctx.addIssue({ code: 'custom', path: ['site'], message: `there is no 'sites' section, so no site named '${c.site}'` });
      return;
    }
    const owner = new Map<string, string>();
    const redisOf = new Map<string, string>();
    for (const [name, site] of Object.entries(c.sites)) {
      for (const dc of site.datacenters) {
        if (!c.datacenters[dc]) ctx.addIssue({ code: 'custom', path: ['sites', name, 'datacenters'], message: `no data center named '${dc}' under 'datacenters'` });
        const other = owner.get(dc);
        if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['sites', name, 'datacenters'], message: `data center '${dc}' is in site '${other}' already; each is in one site only` });
        owner.set(dc, name);
      }
      // Two sites on one Redis must use different prefixes: checkpoints and queues would mix.
      const r = site.redis;
      const where = r.sentinel ? `sentinel ${r.sentinel.name}@${r.sentinel.nodes.join(',')}` : `${r.host}:${r.port}`;
      const id = `${where}/${r.db}/${r.prefix}`;
      const same = redisOf.get(id);
      if (same !== undefined) ctx.addIssue({ code: 'custom', path: ['sites', name, 'redis'], message: `site '${same}' uses the same Redis (${where}, db ${r.db}) and prefix '${r.prefix}': give each site its own Redis or prefix` });
      redisOf.set(id, name);
    }
    for (const dc of Object.keys(c.datacenters)) {
      if (!owner.has(dc)) ctx.addIssue({ code: 'custom', path: ['sites'], message: `data center '${dc}' is in no site; list it under one site's datacenters` });
    }
    if (c.site !== undefined && !c.sites[c.site]) ctx.addIssue({ code: 'custom', path: ['site'], message: `no site named '${c.site}' (known: ${Object.keys(c.sites).join(', ')})` });
  });

/** Config as written (before defaults). */
export type ConfigInput = z.input<typeof configSchema>;
/** Config with every default filled and secrets resolved. */
export type ResolvedConfig = z.output<typeof configSchema>;
export type MysqlConfig = ResolvedConfig['mysql'];
export type MysqlAccount = NonNullable<MysqlConfig['tailer']>;
export type MysqlRole = 'tailer' | 'admin' | 'writer';
export type RedisConfig = ResolvedConfig['redis'];
export type RedisTlsConfig = RedisConfig['tls'];
export type DatacenterConfig = ResolvedConfig['datacenters'][string];
export type RegistryConfig = ResolvedConfig['registry'];
export type SiteConfig = NonNullable<ResolvedConfig['sites']>[string];
