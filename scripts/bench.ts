/**
 * `npm run bench`: mcrepl's speed and memory next to the limits of the machine it runs on,
 * every number measured in the same run, on the local stack (two data centers × two memcached
 * servers; started if it is not running, and stopped again afterwards).
 *
 *   ceilings   zongji parsing the backlog and nothing else; raw pipelined memcached sets to the
 *              four servers at once; MySQL writing the workload (bulk INSERT, and CALL set_key)
 *   naive      bench/naive.ts: one BullMQ job per row per data center, memjs
 *   drain      a backlog of --rows set ops (--value-bytes values over --keys keys) written while
 *              the pipeline is stopped, then applied to all four servers by the real CLI
 *              processes (a tailer, one worker group per data center), per writer; peak RSS
 *              and CPU of each process; the tailer alone and the workers alone; Redis bytes
 *              per queued op
 *   ketama     the same backlog into one data center of three servers of its own: replicate,
 *              then ketama with replicas 1 and 2 (each key checked on the servers it belongs on)
 *   lag        commit → visible on every server, p50/p99/max, at steady source rates, read
 *              by a prober with a plain text-protocol client; per-key order watched meanwhile
 *              and every key checked against MySQL afterwards (the chaos run's checker); then
 *              the same probe with mcrepl stopped against bench/floor.ts (the binlog written
 *              straight to memcached: the lag floor of this machine)
 *   bulk       one transaction of --bulk-rows rows (INSERT … SELECT from a sequence), applied by
 *              the drain's processes (kept running): commit → the last key on every server,
 *              every partition done, a sample of the keys read back; peak RSS of each process
 *              during it, lease losses and restarts from their logs; against the drain's time
 *   distance   the last data center's worker group behind a latency proxy to Redis (--redis-rtt,
 *              scripts/latency-proxy.ts): lag per data center and its queue at --distance-rate
 *   wan        two sites across a simulated WAN (scripts/wan.ts, as `npm run wan`): per-site lag at
 *              --distance-rate, a --wan-cut of west, its catch-up, the checker
 *   flush      `mcrepl flush` of namespaces of --flush-keys keys, until gone from every server
 *
 * It prints a table and writes it to docs/BENCHMARKS.md (--out) with the date and the machine.
 * Each section is a module under bench/ (ceilings, drain, ketama, bulk, lag, distance, flush;
 * bench/context.ts and bench/pipeline.ts hold what they share); this file has the options and
 * runs them in order.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { Redis } from 'ioredis';
import { runNaive } from '../bench/naive.js';
import { startFloor } from '../bench/floor.js';
import { loadConfig } from '../src/config/load.js';
import { serversOf } from '../src/config/schema.js';
import { redisOptions } from '../src/coordination/redis.js';
import { RedisKeys } from '../src/fanout/redis-keys.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { connectMysql } from '../src/registry/mysql.js';
import { installAll } from '../src/registry/schema-installer.js';
import { currentBinlogPosition } from '../src/source/position.js';
import { check, cpuSecondsOf, Proc } from './harness.js';
import { runWan, wanReport } from './wan.js';
import { down, repoRoot, stackEnv, stackLayout, status, up } from './stack.js';
import { SECTIONS, type Section, type Options, say, fmt, mb, ms, type Ctx, accountOpts, NS, insertRows, endMarker, dropPrefix, settle } from '../bench/context.js';
import { zongjiCeiling, memcachedCeiling, setKeyRate } from '../bench/ceilings.js';
import { type DrainResult, measured, profileReport } from '../bench/pipeline.js';
import { drain, stages } from '../bench/drain.js';
import { ketamaSection } from '../bench/ketama.js';
import { bulk } from '../bench/bulk.js';
import { type LagSeries, lagSeries, lagTables, bullmqCost } from '../bench/lag.js';
import { type DistanceResult, distance } from '../bench/distance.js';
import { type FlushResult, flushRun } from '../bench/flush.js';
import { machine, versions } from '../bench/report.js';

// ---------------------------------------------------------------------------------------------
// Options

const count = (v: string): number => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number greater than 0');
  return n;
};
const count0 = (v: string): number => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number (0 to skip)');
  return n;
};
const list = <T>(parse: (s: string) => T) => (v: string): T[] => v.split(',').map((s) => parse(s.trim()));
const rate = (s: string): number | 'max' => (s === 'max' ? 'max' : count(s));

const program = new Command()
  .name('npm run bench --')
  .description('Measure mcrepl against the limits of this machine, on the local stack; print a table and write it to docs/BENCHMARKS.md.')
  .option('--rows <n>', 'set ops in the drain backlog', count, 1_000_000)
  .option('--keys <n>', 'distinct keys in the backlog', count, 100_000)
  .option('--value-bytes <n>', 'value size of the backlog', count, 100)
  .option('--backlog-txn-rows <n>', 'rows per transaction of the backlog (1: one row per transaction, as a site catching up after a cut reads it)', count, 1000)
  .option('--naive-rows <n>', 'rows the naive baseline applies (it is slow)', count, 20_000)
  .option('--writers <list>', 'memcached writers to drain with, side by side', list((s) => s as 'meta' | 'memjs'), ['meta', 'memjs'])
  .option('--bulk-rows <n>', 'rows of the one large transaction (0 skips it)', count0, 1_000_000)
  .option('--lag-rates <list>', "source rates for the lag probe, rows/s; 'max' = as fast as the source goes", list(rate), [500, 2000, 'max'])
  .option('--lag-seconds <n>', 'how long each lag rate runs', count, 20)
  .option('--redis-rtt <list>', "round trips (ms) between the last data center's worker group and Redis, one distance run each", list(count0), [2, 80])
  .option('--distance-rate <n>', 'source rate of the distance runs, rows/s', count, 2000)
  .option('--wan-rtt <ms>', 'round trip between the two sites of the wan section (npm run wan)', count, 80)
  .option('--wan-cut <seconds>', 'how long the wan section cuts west off', count, 120)
  .option('--flush-keys <list>', 'namespace sizes to flush', list(count), [100_000, 1_000_000])
  .option('--only <sections>', `run only these sections (${SECTIONS.join(', ')})`, list((s) => s as Section))
  .option('--set <path=value>', 'a config override for every pipeline of the run, e.g. --set partitions=4 --set tailer.lingerMs=2 (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--out <file>', 'markdown file the table is written to', 'docs/BENCHMARKS.md')
  .option('--no-write', 'print the table only')
  .option('--profile', 'run the drain\'s processes under the V8 CPU profiler and add each one\'s top functions to the report')
  .option('--node-option <flag>', 'a node option for the pipeline\'s processes, e.g. --node-option=--trace-gc (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .addHelpText('after', '\nDefaults take about 11 minutes on a 2-core machine (the INSERT of the bulk transaction alone takes 1-2 minutes of MySQL). Exit code 0 when every section ran (targets missed are reported, not fatal).');

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  program.parse(process.argv);
  const opts = program.opts<Options>();
  const want = (s: Section) => !opts.only || opts.only.includes(s);
  const layout = stackLayout();
  const { started } = await up(layout);
  if (started.length) say(`local stack started: ${started.join(', ')}`);
  const runId = randomBytes(3).toString('hex');
  const logDir = path.join(repoRoot, '.stack', 'bench', runId);
  fs.mkdirSync(logDir, { recursive: true });
  const { config } = loadConfig({
    env: stackEnv(layout),
    overrides: {
      'mysql.database': `bench_${runId}`,
      'mysql.serverId': 300_000 + Math.floor(Math.random() * 100_000),
      'redis.prefix': `bench-${runId}`,
      'datacenters.east': { servers: layout.memcached.filter((m) => m.dc === 'east').map((m) => `127.0.0.1:${m.port}`) },
      'datacenters.west': { servers: layout.memcached.filter((m) => m.dc === 'west').map((m) => `127.0.0.1:${m.port}`) },
      'log.level': 'warn',
      ...Object.fromEntries(
        opts.set.map((kv) => {
          const i = kv.indexOf('=');
          if (i < 1) throw new InvalidArgumentError(`--set expects path=value, got '${kv}'`);
          const raw = kv.slice(i + 1);
          return [kv.slice(0, i), /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw];
        }),
      ),
    },
  });
  const redis = new Redis({ ...redisOptions(config.redis), lazyConnect: false, maxRetriesPerRequest: 3 });
  const ctx: Ctx = {
    opts,
    config,
    database: config.mysql.database,
    servers: Object.values(config.datacenters).flatMap((d) => serversOf(d)),
    writer: accountOpts(config, 'writer'),
    admin: accountOpts(config, 'admin'),
    redis,
    logDir,
    runId,
  };
  const installer = await connectMysql(config.mysql, { database: false });
  await installAll(installer, config);
  for (const [name, id] of Object.entries(NS)) await installer.query(`CALL \`${config.mysql.database}\`.create_namespace(?, ?)`, [id, name]);
  const soft = await versions(ctx);
  say(`run ${runId}: database ${ctx.database}, Redis prefix bench-${runId}-*, logs in ${path.relative(repoRoot, logDir)}`);

  const out: string[] = [];
  const targets: [string, string, boolean | undefined][] = [];
  const cleanups: (() => Promise<void>)[] = [];
  try {
    // The backlog: written while no pipeline runs, at the start of a fresh binlog file (MariaDB
    // 10.11 finds a GTID start position by reading its file from the top; the stack's files are
    // shared with every test run and can be large).
    await installer.query('FLUSH BINARY LOGS').catch((err: Error) => say(`could not rotate the binlog (${err.message}); the drain includes finding its start in a long file`));
    const from = await currentBinlogPosition(installer);
    // Every section but distance reads the backlog (or runs after the drain that applies it).
    const needBacklog = SECTIONS.some((x) => x !== 'distance' && want(x));
    let insertRate = NaN;
    let marker = { flushId: 0, token: '' };
    if (needBacklog) {
      say(`writing the backlog: ${fmt(opts.rows)} set ops, ${opts.valueBytes}-byte values over ${fmt(opts.keys)} keys, ${fmt(opts.backlogTxnRows)} per transaction`);
      const pad = 'v'.repeat(Math.max(0, opts.valueBytes - 8));
      // Small transactions come faster from more connections (each one waits for its commit).
      const conns = opts.backlogTxnRows < 100 ? 6 : 2;
      insertRate = await insertRows(ctx, opts.rows, (i) => [NS.backlog, `b:${i % opts.keys}`, `${String(i).padStart(7, '0')}:${pad}`.slice(0, opts.valueBytes), 0], conns, opts.backlogTxnRows);
      marker = await endMarker(ctx);
      say(`backlog written at ${fmt(insertRate)} rows/s`);
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
    }

    let zongjiRate = NaN;
    if (want('ceilings')) {
      say('ceiling: zongji parsing the backlog');
      zongjiRate = await zongjiCeiling(ctx, from, opts.rows);
      say(`ceiling: raw pipelined memcached sets to ${ctx.servers.length} servers at once`);
      const rawSets = await memcachedCeiling(ctx.servers, Math.min(opts.rows, 1_000_000), opts.valueBytes);
      say('ceiling: CALL set_key, 6 connections, 5 s');
      const callRate = await setKeyRate(ctx, 6, 5);
      out.push(
        '## Ceilings',
        '',
        '| what | rate |',
        '|---|---:|',
        `| zongji parsing the backlog, nothing else (${fmt(opts.rows)} rows) | ${fmt(zongjiRate)} rows/s |`,
        `| raw pipelined memcached \`ms\`, ${opts.valueBytes}-byte values, ${ctx.servers.length} servers at once | ${fmt(rawSets)} sets/s = ${fmt(rawSets / ctx.servers.length)} rows/s to all ${ctx.servers.length} |`,
        `| MySQL: multi-row INSERT into mc_storage (trigger, registry, binlog), 2 connections | ${fmt(insertRate)} rows/s |`,
        `| MySQL: \`CALL set_key\`, autocommit, 6 connections | ${fmt(callRate)} rows/s |`,
        '',
      );
    }

    let naive: Awaited<ReturnType<typeof runNaive>> | undefined;
    if (want('naive')) {
      say(`naive baseline: ${fmt(opts.naiveRows)} rows, one BullMQ job per row per data center`);
      const tailerAcc = mysqlFor(config.mysql, 'tailer');
      naive = await runNaive({
        redis: { ...config.redis, prefix: `bench-${runId}-naive` },
        mysql: { host: tailerAcc.host, port: tailerAcc.port, user: tailerAcc.user, password: tailerAcc.password ?? '', database: ctx.database, serverId: config.mysql.serverId + 101 },
        datacenters: Object.fromEntries(Object.entries(config.datacenters).map(([dc, d]) => [dc, d.servers])),
        from,
        rows: Math.min(opts.naiveRows, opts.rows),
        timeoutMs: 600_000,
      });
      say(`naive: ${fmt(naive.rowsPerSec)} rows/s`);
    }

    let lagPipe: { file: string; keys: RedisKeys; procs: Proc[] } | undefined;
    let lagResults: LagSeries | undefined;
    let metaDrain: DrainResult | undefined;
    if (want('drain') || want('bulk') || want('lag') || want('flush')) {
      const drains: DrainResult[] = [];
      // The default writer (meta) drains last: its pipeline stays up for the lag and flush sections.
      const writers = want('drain') ? [...opts.writers].sort((a, b) => Number(a === 'meta') - Number(b === 'meta')) : (['meta'] as const);
      for (const [i, w] of writers.entries()) {
        const keep = i === writers.length - 1;
        say(`drain: ${fmt(opts.rows)} rows to ${ctx.servers.length} servers, ${w} writer`);
        const d = await drain(ctx, w, from, marker, keep);
        say(`drain (${w}): ${fmt(d.rowsPerSec)} rows/s in ${fmt(d.seconds, 1)} s (after ${fmt(d.startupSeconds, 1)} s starting the processes); peak RSS ${d.usage.map((u) => `${u.name} ${mb(u.peakRssBytes)}`).join(', ')}`);
        drains.push(d);
        if (w === 'meta') metaDrain = d;
        if (keep) {
          lagPipe = { file: d.file, keys: d.keys, procs: d.procs };
          cleanups.push(d.stop);
        }
        {
          const result = await check(ctx.admin, ctx.servers, [], { nsId: NS.backlog });
          say(`drain (${w}): checked ${fmt(result.keysChecked)} keys × ${ctx.servers.length} servers against MySQL: ${result.divergent.size} divergent`);
          if (result.divergent.size > 0) throw new Error(`the drain left ${result.divergent.size} keys different from MySQL`);
        }
      }
      if (want('drain')) {
        const meta = drains.find((d) => d.writer === 'meta') ?? drains[0]!;
        say('stages: the tailer alone, then the workers alone');
        const st = await stages(ctx, from, marker, meta.txnSeq);
        const names = meta.usage.map((u) => u.name);
        out.push(
          `## Drain: ${fmt(opts.rows)} set ops (${opts.valueBytes}-byte values, ${fmt(opts.keys)} keys) to all ${ctx.servers.length} servers${opts.backlogTxnRows === 1000 ? "" : `, ${fmt(opts.backlogTxnRows)} per transaction`}`,
          '',
          'Written while the pipeline was stopped, then applied by the real CLI processes (one tailer, one worker group per data center): the workers are started, then the tailer; the clock runs from the tailer holding its lease (every process up) to the last op on the last server. Starting the processes (Node loading its modules, connecting) is the *start* column, not in the rate: it is the same for any backlog, and the naive baseline and the ceilings run inside the benchmark process, without it.',
          '',
          `| pipeline | rows/s | × naive | of zongji ceiling | start | ${names.map((n) => `peak RSS ${n}`).join(' | ')} | CPU s ${names.join(' / ')} |`,
          `|---|---:|---:|---:|---:|${names.map(() => '---:|').join('')}---:|`,
          ...(naive ? [`| naive: one BullMQ job per row per DC, memjs (${fmt(naive.rows)} rows) | ${fmt(naive.rowsPerSec)} | 1.0 | ${fmt((100 * naive.rowsPerSec) / zongjiRate, 1)} % | | ${names.map(() => '').join(' | ')} | |`] : []),
          ...drains.map(
            (d) =>
              `| mcrepl, ${d.writer} writer | ${fmt(d.rowsPerSec)} | ${naive ? fmt(d.rowsPerSec / naive.rowsPerSec, 1) : '–'} | ${fmt((100 * d.rowsPerSec) / zongjiRate, 1)} % | ${fmt(d.startupSeconds, 1)} s | ${d.usage.map((u) => mb(u.peakRssBytes)).join(' | ')} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`,
          ),
          '',
          `Where the CPU went during each drain (CPU seconds; the machine has ${os.cpus().length} cores, so a drain of *w* seconds has ${os.cpus().length}·*w* to spend):`,
          '',
          `| drain | wall s | ${names.join(' | ')} | ${meta.servers.map((x) => x.name).join(' | ')} | total |`,
          `|---|---:|${names.map(() => '---:|').join('')}${meta.servers.map(() => '---:|').join('')}---:|`,
          ...drains.map((d) => {
            const total = d.usage.reduce((a, u) => a + u.cpuSeconds, 0) + d.servers.reduce((a, x) => a + x.cpuSeconds, 0);
            return `| ${d.writer} | ${fmt(d.seconds, 1)} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' | ')} | ${d.servers.map((x) => fmt(x.cpuSeconds, 1)).join(' | ')} | ${fmt(total, 1)} of ${fmt(d.seconds * os.cpus().length, 1)} |`;
          }),
          '',
          '| stage alone | rate |',
          '|---|---:|',
          `| tailer: binlog → jobs in Redis (no workers running) | ${fmt(st.tailerRowsPerSec)} rows/s, peak RSS ${mb(st.tailerRss)} |`,
          `| worker groups: queued jobs → ${ctx.servers.length} servers (no tailer running) | ${fmt(st.workersRowsPerSec)} rows/s |`,
          `| Redis memory per queued op (per data center) | ${fmt(st.redisBytesPerOp)} bytes |`,
          '',
        );
        targets.push([`drain ≥ 50,000 rows/s to all four servers`, `${fmt(meta.rowsPerSec)} rows/s (${fmt(opts.rows / (meta.seconds + meta.startupSeconds))} rows/s counting the ${fmt(meta.startupSeconds, 1)} s process start)`, meta.rowsPerSec >= 50_000]);
        if (naive) targets.push(['drain ≥ 10× the naive baseline', `${fmt(meta.rowsPerSec / naive.rowsPerSec, 1)}×`, meta.rowsPerSec >= 10 * naive.rowsPerSec]);
        const peak = Math.max(...meta.usage.map((u) => u.peakRssBytes));
        targets.push(['tailer and each worker ≤ 200 MB peak RSS during the drain', `max ${mb(peak)}`, peak <= 200 * 1024 * 1024]);
      }
    }

    if (want('ketama')) {
      out.push(...(await ketamaSection(ctx, from, marker)));
    }

    if (want('bulk') && opts.bulkRows > 0 && lagPipe) {
      say(`bulk: one transaction of ${fmt(opts.bulkRows)} rows, applied by the drain's processes`);
      const b = await bulk(ctx, lagPipe, opts.bulkRows);
      say(`bulk: last key on every server ${fmt(b.lastKeySeconds, 1)} s after the commit, every partition ${fmt(b.doneSeconds, 1)} s; peak RSS ${b.usage.map((u) => `${u.name} ${mb(u.peakRssBytes)}`).join(', ')}; ${b.found} of ${b.sampled} sampled reads found; lease lost ${b.leaseLost}, restarts ${b.restarts}`);
      for (const [k, n] of b.otherLogs) say(`  bulk log: ${n}× ${k}`);
      // Against the drain of the same run, per row: a drain of a different size scales.
      const drainSeconds = metaDrain ? (metaDrain.seconds * b.rows) / opts.rows : NaN;
      const ratio = b.lastKeySeconds / drainSeconds;
      const names = b.usage.map((u) => u.name);
      const drainRef = metaDrain ? (b.rows === opts.rows ? `the ${fmt(opts.rows)}-op drain: ${fmt(metaDrain.seconds, 1)} s` : `the ${fmt(opts.rows)}-op drain scaled to ${fmt(b.rows)} rows: ${fmt(drainSeconds, 1)} s`) : 'no drain in this run';
      out.push(
        `## One large transaction: ${fmt(b.rows)} rows in one COMMIT`,
        '',
        `\`INSERT INTO mc_storage (ns_id, mc_key, mc_value) SELECT 50, CONCAT('big-<run>-', seq), REPEAT('v', 100) FROM seq_1_to_${b.rows}\` in one transaction, applied by the drain's processes (one tailer, one worker group per data center, kept running). The tailer stages the transaction's chunks in Redis while it streams in and adds their jobs at its end. The clock starts when the COMMIT returns; it stops when every server holds the last key, then when every partition of every data center is past the transaction (a flush marker written after it). Peak RSS is each process's peak during this stage${b.peakSinceReset ? ' (its VmHWM reset at the start)' : ' (since the process started: resetting VmHWM was refused)'}. Lease losses and restarts are counted in the processes' logs.`,
        '',
        `| rows | INSERT … SELECT | COMMIT | commit → last key on every server | commit → every partition past it | × the drain's time (${drainRef}) | ${names.map((n) => `peak RSS ${n}`).join(' | ')} | CPU s ${names.join(' / ')} |`,
        `|---:|---:|---:|---:|---:|---:|${names.map(() => '---:|').join('')}---:|`,
        `| ${fmt(b.rows)} | ${fmt(b.insertSeconds, 1)} s | ${fmt(b.commitSeconds, 1)} s | ${fmt(b.lastKeySeconds, 1)} s | ${fmt(b.doneSeconds, 1)} s | ${fmt(ratio, 2)} | ${b.usage.map((u) => mb(u.peakRssBytes)).join(' | ')} | ${b.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`,
        '',
        '| sample read (keys × servers) | found | wrong value | memcached evictions | Redis memory at the most (above before) | leases lost | components restarted | late lease renewals | processes alive at the end |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|:---:|',
        `| ${fmt(b.sampled)} | ${fmt(b.found)} | ${b.wrongValue} | ${fmt(b.evictions)} | ${mb(b.redisPeakBytes)} | ${b.leaseLost} | ${b.restarts} | ${b.lateRenewals} | ${b.alive ? 'yes' : '**no**'} |`,
        '',
        ...(b.otherLogs.size ? ['Other warnings and errors in the logs meanwhile:', '', ...[...b.otherLogs].map(([k, n]) => `- ${n}× ${k}`), ''] : []),
      );
      targets.push([`one ${fmt(b.rows)}-row transaction on every server ≤ 2× the drain's time`, `${fmt(b.lastKeySeconds, 1)} s after its COMMIT, ${fmt(ratio, 2)}× (${drainRef})`, ratio <= 2 && b.found === b.sampled && b.wrongValue === 0]);
      const peak = Math.max(...b.usage.map((u) => u.peakRssBytes));
      targets.push(['tailer and each worker ≤ 200 MB peak RSS during it', `max ${mb(peak)}`, peak <= 200 * 1024 * 1024]);
      targets.push(['no lease lost, no restart during it', `${b.leaseLost} leases lost, ${b.restarts} components restarted${b.alive ? '' : ', a process exited'}`, b.leaseLost === 0 && b.restarts === 0 && b.alive]);
    }

    if (want('lag') && lagPipe) {
      const pipeKeys = lagPipe.keys;
      const firstDc = Object.keys(ctx.config.datacenters)[0]!;
      // BullMQ numbers a queue's jobs with a counter (`<queue>:id`).
      const jobsAdded = async () => {
        const ids = await Promise.all(Array.from({ length: ctx.config.partitions }, (_, p) => ctx.redis.get(pipeKeys.queueKey(firstDc, p, 'id'))));
        return ids.reduce((a, v) => a + Number(v ?? 0), 0);
      };
      const series = await lagSeries(ctx, 'mcrepl', measured(lagPipe.procs), jobsAdded);
      const checked = await check(ctx.admin, ctx.servers, [], { nsId: NS.lag });
      out.push(
        '## Live lag: commit → visible on every server of every data center',
        '',
        `A steady load of \`CALL set_key\` for ${opts.lagSeconds} s per rate; a prober sets a key of its own every 20 ms and, from the moment its CALL returns, reads all ${ctx.servers.length} servers with a plain text-protocol client until each shows the value (1 ms polling; the first second is warm-up).`,
        '',
        ...lagTables(series),
        `Per-key order under this load: ${fmt(series.observations)} reads of ${series.watched} keys on every server, ${series.regressions} regressions. Afterwards the chaos run's checker compared ${fmt(checked.keysChecked)} keys × ${ctx.servers.length} servers with MySQL: ${checked.divergent.size} divergent.`,
        '',
      );
      lagResults = series;
      out.push(...(await bullmqCost(ctx, series)));
      const at2k = series.rows.find((r) => r.target === 2000);
      if (at2k) targets.push(['live lag p99 ≤ 20 ms at 2,000 rows/s', ms(at2k.p99), at2k.p99 <= 20]);
      targets.push(['per-key order and the checker under load', `${series.regressions} regressions, ${checked.divergent.size} divergent keys`, series.regressions === 0 && checked.divergent.size === 0]);
    }

    if (want('flush') && lagPipe) {
      const rows: FlushResult[] = [];
      for (const [i, size] of opts.flushKeys.entries()) {
        const r = await flushRun(ctx, size, i, lagPipe);
        say(`flush ${fmt(size)}: ${fmt(r.totalSeconds, 1)} s (MySQL ${fmt(r.mysqlSeconds, 1)} s); ${r.stillThere} of ${r.sampled} sampled reads still found a key`);
        rows.push(r);
      }
      out.push(
        '## Namespace flush',
        '',
        '`mcrepl flush <namespace>` from start until it returns (every partition of every data center applied the flush marker, which follows every delete); then a sample of the keys is read on every server with a plain client.',
        '',
        '| keys | flush_namespace in MySQL | until gone from every server | sample read | keys found | registry rows left |',
        '|---:|---:|---:|---:|---:|---:|',
        ...rows.map((r) => `| ${fmt(r.keys)} | ${fmt(r.mysqlSeconds, 1)} s | ${fmt(r.totalSeconds, 1)} s | ${fmt(r.sampled)} | ${r.stillThere} | ${r.registryLeft} |`),
        '',
      );
      const big = rows.find((r) => r.keys === 1_000_000);
      if (big) targets.push(['flush of a 1,000,000-key namespace ≤ 30 s', `${fmt(big.totalSeconds, 1)} s`, big.totalSeconds <= 30 && big.stillThere === 0]);
    }

    if (want('distance') && opts.redisRtt.length > 0) {
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      // The flush before it leaves MariaDB purging a million deleted rows for a while.
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      const runs: DistanceResult[] = [];
      for (const rtt of opts.redisRtt) {
        const d = await distance(ctx, rtt);
        const near = d.lag.perDc.filter((x) => x.dc !== d.far);
        const farLag = d.lag.perDc.find((x) => x.dc === d.far)!;
        say(`distance ${rtt} ms: ${near.map((x) => `${x.dc} p50 ${ms(x.p50)} p99 ${ms(x.p99)}`).join(', ')}; ${d.far} p50 ${ms(farLag.p50)} p99 ${ms(farLag.p99)}; ${d.far}'s queue at most ${d.maxQueued} jobs, ${d.queuedAtEnd} at the end`);
        runs.push(d);
      }
      const dcs = Object.keys(config.datacenters);
      const far = dcs.at(-1)!;
      out.push(
        `## Distance inside a site: ${far}'s worker group away from Redis`,
        '',
        `The single-site layout, with \`${far}\`'s worker group reaching Redis through a latency proxy on loopback (\`scripts/latency-proxy.ts\`, this kernel has no netem) that adds the round trip below; the tailer and the other worker groups are next to Redis. A steady \`CALL set_key\` load at ${fmt(opts.distanceRate)} rows/s for ${opts.lagSeconds} s, probed as in the lag section, per data center. The queue is ${far}'s jobs waiting in Redis, sampled every 100 ms. Target: the far data center keeps up (its queue stays bounded) and its lag p99 is within 5 round trips of the local one.`,
        '',
        `| added round trip (measured) | achieved | ${dcs.map((dc) => `${dc} p50 / p99`).join(' | ')} | ${far} − local p99 | ${far}'s queue: most / at the end |`,
        `|---|---:|${dcs.map(() => '---:|').join('')}---:|---:|`,
        ...runs.map((d) => {
          const local = Math.max(...d.lag.perDc.filter((x) => x.dc !== d.far).map((x) => x.p99));
          const farP99 = d.lag.perDc.find((x) => x.dc === d.far)!.p99;
          return `| ${d.rttMs} ms (${fmt(d.measuredRttMs, 1)} ms) | ${fmt(d.lag.achieved)} rows/s | ${d.lag.perDc.map((x) => `${ms(x.p50)} / ${ms(x.p99)}`).join(' | ')} | ${ms(farP99 - local)} | ${d.maxQueued} / ${d.queuedAtEnd} jobs |`;
        }),
        '',
      );
      for (const d of runs) {
        const local = Math.max(...d.lag.perDc.filter((x) => x.dc !== d.far).map((x) => x.p99));
        const farP99 = d.lag.perDc.find((x) => x.dc === d.far)!.p99;
        const bounded = d.queuedAtEnd <= 2 * config.partitions && d.lag.lost === 0;
        targets.push([
          `a data center ${d.rttMs} ms from Redis keeps up with ${fmt(opts.distanceRate)} rows/s, lag p99 ≤ local + 5 round trips`,
          `p99 ${ms(farP99)} against ${ms(local)} locally (+${ms(farP99 - local)}, 5 round trips = ${fmt(5 * d.rttMs)} ms); queue at most ${d.maxQueued} jobs, ${d.queuedAtEnd} at the end`,
          bounded && farP99 - local <= 5 * d.rttMs,
        ]);
      }
    }

    if (want('wan')) {
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      say(`wan: two sites ${opts.wanRtt} ms apart, ${fmt(opts.distanceRate)} rows/s, west cut off for ${opts.wanCut} s`);
      const w = await runWan({ rtt: opts.wanRtt, rate: opts.distanceRate, measure: opts.lagSeconds, cut: opts.wanCut, keys: 5_000, fallbackBehind: 10_000, portBase: layout.mariadb.port - 6 }, layout);
      out.push(
        `## Two sites across a WAN: east (the primary) and west (a replica ${opts.wanRtt} ms away)`,
        '',
        `\`npm run wan\` (scripts/wan.ts) inside this run: west's MariaDB replica replicates from the primary through the latency proxy (${opts.wanRtt} ms round trip), and west has its own Redis, tailer (reading the replica) and worker group. A \`CALL set_key\` load of ${fmt(opts.distanceRate)} rows/s on the primary; lag is commit → visible on every server of the site, ${opts.lagSeconds} s before the cut; then west is cut off for ${opts.wanCut} s while the load goes on, and timed from the heal until it holds the last probe written before it.`,
        '',
        ...wanReport(w),
        '',
      );
      targets.push([`two sites ${opts.wanRtt} ms apart: west's p99 ≤ east's + ${opts.wanRtt} ms`, `${ms(w.before.west.p99)} against ${ms(w.before.east.p99)}`, w.before.west.p99 <= w.before.east.p99 + opts.wanRtt]);
      if (w.eastDuringCut) targets.push([`east's p99 while west is cut off within 20 % of before`, `${ms(w.eastDuringCut.p99)} against ${ms(w.before.east.p99)}`, w.eastDuringCut.p99 <= 1.2 * w.before.east.p99]);
      if (w.catchUp) targets.push(['west catches up ≥ 20,000 rows/s after the heal', `${fmt(w.catchUp.rowsPerSec)} rows/s (${fmt(w.catchUp.rows)} rows in ${fmt(w.catchUp.seconds, 1)} s)`, w.catchUp.rowsPerSec >= 20_000]);
      targets.push(['two sites: divergent keys after the cut and heal', String(w.divergent), w.divergent === 0]);
    }

    if (want('lag')) {
      // The same probe against the least a binlog reader can do here (bench/floor.ts), with
      // mcrepl stopped: what the machine itself costs in lag at these rates.
      for (const c of cleanups.splice(0)) await c().catch(() => undefined);
      // The flush before it leaves MariaDB purging a million deleted rows for a while.
      await settle('MariaDB', status(layout).find((s) => s.name === 'mariadb')?.pid);
      say('lag floor: the binlog written straight to memcached (bench/floor.ts), mcrepl stopped');
      const floor = await startFloor({ mysql: { ...mysqlFor(config.mysql, 'tailer'), serverId: config.mysql.serverId + 202 }, servers: ctx.servers, from: await currentBinlogPosition(installer) });
      let series: LagSeries;
      try {
        series = await lagSeries(ctx, 'floor', [{ name: 'floor', cpuSeconds: () => cpuSecondsOf(floor.pid) }]);
      } finally {
        await floor.stop();
      }
      out.push(
        '## Lag floor: the same probe, the binlog written straight to memcached',
        '',
        'What the machine itself costs: `bench/floor.ts` reads the binlog with the same listener and writes each transaction at once to every server (one pipelined connection each, no Redis, no jobs, no other process), under the same load and probe, with mcrepl stopped. mcrepl adds to it the Redis queues and the hand-over to one worker process per data center.',
        '',
        ...lagTables(series),
      );
      const floor2k = series.rows.find((r) => r.target === 2000);
      if (floor2k) {
        // Beside the lag target: what the machine allows at that rate.
        const at = targets.findIndex(([t]) => t.startsWith('live lag'));
        targets.splice(at < 0 ? targets.length : at + 1, 0, ['(lag floor: p99 at 2,000 rows/s, the binlog written straight to memcached, no queue)', `${ms(floor2k.p99)} (${fmt(floor2k.achieved)} rows/s reached)`, undefined]);
      }
      for (const r of series.rows) {
        const ours = lagResults?.rows.find((x) => x.target === r.target);
        if (ours) say(`lag at ${String(r.target)}: mcrepl p99 ${ms(ours.p99)}, floor p99 ${ms(r.p99)}`);
      }
    }
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
    await installer.query(`DROP DATABASE IF EXISTS \`${ctx.database}\``).catch(() => undefined);
    await installer.end();
    await dropPrefix(redis, `bench-${runId}`).catch(() => undefined);
    redis.disconnect();
    if (started.length) {
      await down(layout);
      say('local stack stopped');
    }
  }

  const args = process.argv.slice(2);
  const doc = [
    '# Benchmarks',
    '',
    `Measured by \`npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}\` on ${new Date().toISOString().replace(/\..*/, 'Z')}, every number in the same run. Rerun it to replace this file.`,
    '',
    machine(ctx, soft),
    '',
    ...(targets.length
      ? ['## Targets', '', '| target | measured | met |', '|---|---|:---:|', ...targets.map(([t, m, ok]) => `| ${t} | ${m} | ${ok === undefined ? '–' : ok ? 'yes' : '**no**'} |`), '']
      : []),
    ...out,
    ...profileReport(ctx),
  ].join('\n');
  process.stdout.write(`\n${doc}\n`);
  if (opts.write) {
    fs.writeFileSync(path.resolve(repoRoot, opts.out), doc);
    say(`written to ${opts.out}`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[bench] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

