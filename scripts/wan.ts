/**
 * `npm run wan`: two sites across a simulated WAN, on this machine only.
 *
 *   east   the stack's MariaDB (the primary), the stack's Redis, memcached east-1/2, a tailer
 *          and a worker group
 *   west   a MariaDB replica of the primary (scripts/replica.ts), a Redis of its own, memcached
 *          west-1/2, a tailer reading the replica and a worker group
 *
 * The only connection between the sites, MySQL replication, goes through a latency proxy
 * (scripts/latency-proxy.ts, in a process of its own; this kernel has no netem) adding --rtt.
 * A steady `CALL set_key` load runs on the primary; a prober measures commit → visible on every
 * server of each site with a plain memcached client. Then west is cut off for --cut seconds
 * (the proxy carries nothing) while the load goes on, healed, and timed until it has caught up;
 * then the load stops, everything drains, and the chaos run's checker compares every server
 * with MySQL. It prints a table per site and ends with `divergent keys: N` (exit 1 unless 0).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError } from 'commander';
import mysql from 'mysql2/promise';
import { loadConfig } from '../src/config/load.js';
import type { ResolvedConfig } from '../src/config/schema.js';
import { mysqlFor } from '../src/registry/accounts.js';
import { connectMysql } from '../src/registry/mysql.js';
import { installAll } from '../src/registry/schema-installer.js';
import { writeConfigFile } from '../test/helpers/cli.js';
import { check, Proc, sleep, waitForLog } from './harness.js';
import { MemcachedTextClient } from './memcached-text.js';
import { down, stackEnv, stackLayout, up, type StackLayout } from './stack.js';
import { startWestSite } from './two-sites.js';

const count = (v: string): number => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number ≥ 0');
  return n;
};

const program = new Command()
  .name('npm run wan --')
  .description('Two sites across a simulated WAN (loopback only): per-site lag, a cut of west, its catch-up, and the checker.')
  .option('--rtt <ms>', 'round trip added between the sites (MySQL replication goes through it)', count, 80)
  .option('--rate <rows>', 'CALL set_key load on the primary, rows/s', count, 2000)
  .option('--measure <seconds>', 'how long lag is measured before the cut', count, 30)
  .option('--cut <seconds>', 'how long west is cut off while the load goes on (0: no cut)', count, 120)
  .option('--keys <n>', 'distinct keys of the load', count, 5000)
  .option('--fallback-behind <n>', "west's tailer reads the primary (through the WAN) while its replica is this many transactions behind (0: never)", count, 10_000)
  .option('--port-base <port>', 'ports of the local stack this uses (the replica is base+9, west\'s Redis base+90)', count, Number(process.env.MCREPL_STACK_PORT_BASE ?? 23300))
  .addHelpText('after', '\nDefaults take about 4 minutes. Exit code 0 when no key diverges; the targets are reported, not enforced.');

interface Options {
  rtt: number;
  rate: number;
  measure: number;
  cut: number;
  keys: number;
  fallbackBehind: number;
  portBase: number;
}

const say = (s: string) => process.stderr.write(`[wan ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${s}\n`);
const t0 = performance.now();
const ms = (v: number) => (Number.isFinite(v) ? `${v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString('en')} ms` : '–');
const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : NaN);

/** Lag samples per site, and probes still pending there. */
interface SiteProbe {
  name: string;
  servers: string[];
  clients: MemcachedTextClient[];
  lags: number[];
  pending: { key: string; value: string; at: number }[];
}

interface LagSummary {
  p50: number;
  p99: number;
  probes: number;
}

export interface WanResult {
  rtt: number;
  /** p50/p99 per site before the cut; east's during the cut. */
  before: { east: LagSummary; west: LagSummary };
  eastDuringCut: LagSummary | undefined;
  /** Rows written while west was cut off and not applied there at the heal, and how fast it caught up. */
  catchUp: { rows: number; seconds: number; rowsPerSec: number } | undefined;
  divergent: number;
}

export async function runWan(opts: Options, layout: StackLayout = stackLayout(undefined, opts.portBase)): Promise<WanResult> {
  const started = await up(layout);
  if (started.started.length) say(`local stack started: ${started.started.join(', ')}`);
  const runId = randomBytes(3).toString('hex');
  const logDir = path.join(layout.dir, 'wan', runId);
  fs.mkdirSync(logDir, { recursive: true });
  const cleanups: (() => Promise<void>)[] = [];
  try {
    // The WAN: replication from the primary to west's replica goes through the proxy, and so
    // does west's tailer when it reads the primary while the replica is far behind.
    const westSite = await startWestSite(layout, { rttMs: opts.rtt, redisPort: opts.portBase + 90, replicaArgs: ['--slave-parallel-mode=optimistic', '--slave-parallel-threads=8'] });
    cleanups.push(() => westSite.stop());
    const { wan: proxy, replica } = westSite;

    const base = loadConfig({ env: stackEnv(layout), overrides: { 'datacenters.east': { servers: servers(layout, 'east') }, 'datacenters.west': { servers: servers(layout, 'west') } } }).config;
    const config: ResolvedConfig = {
      ...base,
      mysql: { ...base.mysql, database: `wan_${runId}` },
      redis: { ...base.redis, prefix: `wan-${runId}` },
      partitions: 1,
      sites: westSite.sites(base, { prefix: `wan-${runId}`, fallbackBehind: opts.fallbackBehind }),
    };
    const installer = await connectMysql(config.mysql, { database: false });
    await installAll(installer, config);
    cleanups.push(async () => {
      await installer.query(`DROP DATABASE IF EXISTS \`${config.mysql.database}\``).catch(() => undefined);
      await installer.end();
    });
    const nsId = 90;
    await installer.query(`CALL \`${config.mysql.database}\`.create_namespace(?, 'wan')`, [nsId]);
    say(`replica on ${replica.inst.port} replicating through the proxy (${opts.rtt} ms round trip); waiting for it to have the schema`);
    if (!(await replica.caughtUp(60_000))) throw new Error('the replica did not catch up with the schema');
    const file = writeConfigFile(config);
    const procs = [new Proc('worker-east', ['-c', file, 'worker', 'east'], logDir), new Proc('worker-west', ['-c', file, 'worker', 'west'], logDir), new Proc('tailer-east', ['-c', file, '--site', 'east', 'tailer'], logDir), new Proc('tailer-west', ['-c', file, '--site', 'west', 'tailer'], logDir)];
    for (const p of procs) p.start();
    cleanups.push(async () => void (await Promise.all(procs.map((p) => p.kill('SIGTERM')))));
    for (const p of procs) if (!(await waitForLog(p.logFile, 0, /"msg":"mcrepl ready"/, 60_000))) throw new Error(`${p.name} did not get ready; see ${p.logFile}`);
    say(`pipeline up: ${procs.map((p) => p.name).join(', ')}; logs in ${path.relative(process.cwd(), logDir)}`);

    const writer = mysqlFor(config.mysql, 'writer');
    const writerOpts = { host: writer.host, port: writer.port, user: writer.user, password: writer.password ?? '', database: writer.database };
    const sites: SiteProbe[] = (['east', 'west'] as const).map((name) => ({ name, servers: config.datacenters[name]!.servers, clients: config.datacenters[name]!.servers.map((s) => new MemcachedTextClient(s, 5_000)), lags: [], pending: [] }));
    const [east, west] = sites as [SiteProbe, SiteProbe];

    // The load: per-key increasing values, spread over connections, paced.
    const connections = Math.max(1, Math.ceil(opts.rate / 250));
    const conns = await Promise.all(Array.from({ length: connections }, () => mysql.createConnection(writerOpts)));
    cleanups.push(async () => void (await Promise.all(conns.map((c) => c.end().catch(() => undefined)))));
    let loading = true;
    let rows = 0;
    const interval = (1000 * connections) / Math.max(1, opts.rate - 50);
    const load = conns.map(async (c, ci) => {
      let next = performance.now();
      for (let j = 0; loading; j++) {
        next += interval;
        const wait = next - performance.now();
        if (wait > 1) await sleep(wait);
        await c.query('CALL set_key(?, ?, ?, 0)', [nsId, `w:${runId}:${(j * connections + ci) % opts.keys}`, `${j}:${ci}`]);
        rows++;
      }
    });

    // The prober: a key of its own every 20 ms; each site's servers are polled for it.
    const probeConn = await mysql.createConnection(writerOpts);
    cleanups.push(() => probeConn.end().catch(() => undefined));
    let probing = true;
    let n = 0;
    const prober = (async () => {
      while (probing) {
        const slot = performance.now() + 20;
        const key = `probe:${runId}:${n}`;
        const value = `p${n++}`;
        await probeConn.query('CALL set_key(?, ?, ?, 0)', [nsId, key, value]);
        const at = performance.now();
        for (const s of sites) s.pending.push({ key, value, at });
        const wait = slot - performance.now();
        if (wait > 0) await sleep(wait);
      }
    })();
    // Per site: the oldest pending probe first (a site applies in order), polled every ms.
    let polling = true;
    const pollers = sites.map(async (s) => {
      while (polling) {
        const p = s.pending[0];
        if (!p) {
          await sleep(1);
          continue;
        }
        const seen = await Promise.all(s.clients.map((c) => c.get(p.key).then((r) => r?.value.toString() === p.value, () => false)));
        if (seen.every(Boolean)) {
          s.pending.shift();
          s.lags.push(performance.now() - p.at);
        } else {
          // Polled every ms while young; a probe already late (west cut off, catching up) is
          // polled less often (lag measured within 5 %), so that the harness does not take the
          // CPU the catching-up site needs.
          await sleep(Math.min(50, Math.max(1, (performance.now() - p.at) / 20)));
        }
      }
    });

    await sleep(3_000); // warm-up
    for (const s of sites) s.lags.length = 0;
    say(`measuring lag per site at ${opts.rate} rows/s for ${opts.measure} s`);
    await sleep(opts.measure * 1000);
    const summary = (lags: number[]) => {
      const sorted = [...lags].sort((a, b) => a - b);
      return { p50: pct(sorted, 50), p99: pct(sorted, 99), probes: sorted.length };
    };
    const before = { east: summary(east.lags), west: summary(west.lags) };
    say(`before the cut: east p50 ${ms(before.east.p50)} p99 ${ms(before.east.p99)}; west p50 ${ms(before.west.p50)} p99 ${ms(before.west.p99)}`);

    let eastDuringCut: WanResult['eastDuringCut'];
    let catchUp: WanResult['catchUp'];
    if (opts.cut > 0) {
      east.lags.length = 0;
      await proxy.cut();
      const cutAt = performance.now();
      const rowsAtCut = rows;
      say(`west cut off for ${opts.cut} s (the proxy carries nothing); the load goes on`);
      await sleep(opts.cut * 1000);
      eastDuringCut = summary(east.lags);
      const pendingWest = west.pending.length;
      const rowsAtHeal = rows;
      await proxy.heal();
      const healedAt = performance.now();
      say(`healed after ${((healedAt - cutAt) / 1000).toFixed(0)} s: east p99 during the cut ${ms(eastDuringCut.p99)} (${eastDuringCut.probes} probes); west has ${pendingWest} probes to catch up`);
      // Caught up: the last probe written before the heal is visible on every west server.
      const lastBeforeHeal = n - 1;
      const deadline = performance.now() + 600_000;
      while (west.pending.some((p) => Number(p.value.slice(1)) <= lastBeforeHeal) && performance.now() < deadline) await sleep(50);
      const seconds = (performance.now() - healedAt) / 1000;
      const behind = rowsAtHeal - rowsAtCut;
      catchUp = { rows: behind, seconds, rowsPerSec: behind / seconds };
      say(`west caught up ${seconds.toFixed(1)} s after the heal: ${behind.toLocaleString('en')} rows written during the cut, ${Math.round(catchUp.rowsPerSec).toLocaleString('en')} rows/s`);
    }

    loading = false;
    probing = false;
    await Promise.all([...load, prober]);
    say('load stopped; waiting for both sites to drain');
    const lastProbe = `probe:${runId}:${n - 1}`;
    for (const s of sites) {
      const deadline = performance.now() + 300_000;
      while (performance.now() < deadline && !(await Promise.all(s.clients.map((c) => c.get(lastProbe)))).every((r) => r?.value.toString() === `p${n - 1}`)) await sleep(50);
    }
    polling = false;
    await Promise.all(pollers);
    for (const s of sites) for (const c of s.clients) c.close();
    const admin = mysqlFor(config.mysql, 'admin');
    const result = await check({ host: admin.host, port: admin.port, user: admin.user, password: admin.password ?? '', database: admin.database }, [...east.servers, ...west.servers], [], { nsId });
    say(`checker: ${result.keysChecked.toLocaleString('en')} keys × ${east.servers.length + west.servers.length} servers against MySQL: ${result.divergent.size} divergent`);
    return { rtt: opts.rtt, before, eastDuringCut, catchUp, divergent: result.divergent.size };
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err: Error) => say(`cleanup: ${err.message}`));
    if (started.started.length) await down(layout);
  }
}

function servers(layout: StackLayout, dc: string): string[] {
  return layout.memcached.filter((m) => m.dc === dc).map((m) => `127.0.0.1:${m.port}`);
}

/** The report: a table per site and the targets of issue 10. */
export function wanReport(r: WanResult): string[] {
  const lines = [
    `| site | lag p50 | lag p99 | probes |`,
    `|---|---:|---:|---:|`,
    `| east (the primary's site) | ${ms(r.before.east.p50)} | ${ms(r.before.east.p99)} | ${r.before.east.probes} |`,
    `| west (a replica ${r.rtt} ms away) | ${ms(r.before.west.p50)} | ${ms(r.before.west.p99)} | ${r.before.west.probes} |`,
    ...(r.eastDuringCut ? [`| east while west is cut off | ${ms(r.eastDuringCut.p50)} | ${ms(r.eastDuringCut.p99)} | ${r.eastDuringCut.probes} |`] : []),
    '',
    `| target | measured | met |`,
    `|---|---|:---:|`,
    `| west's p99 ≤ east's + ${r.rtt} ms | ${ms(r.before.west.p99)} against ${ms(r.before.east.p99)} | ${r.before.west.p99 <= r.before.east.p99 + r.rtt ? 'yes' : '**no**'} |`,
    ...(r.eastDuringCut ? [`| east's p99 during the cut within 20 % of before | ${ms(r.eastDuringCut.p99)} against ${ms(r.before.east.p99)} | ${r.eastDuringCut.p99 <= r.before.east.p99 * 1.2 ? 'yes' : '**no**'} |`] : []),
    ...(r.catchUp ? [`| west catches up at ≥ 20,000 rows/s after the heal | ${Math.round(r.catchUp.rowsPerSec).toLocaleString('en')} rows/s (${r.catchUp.rows.toLocaleString('en')} rows in ${r.catchUp.seconds.toFixed(1)} s) | ${r.catchUp.rowsPerSec >= 20_000 ? 'yes' : '**no**'} |`] : []),
    `| divergent keys | ${r.divergent} | ${r.divergent === 0 ? 'yes' : '**no**'} |`,
  ];
  return lines;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  program.parse(process.argv);
  const opts = program.opts<Options>();
  runWan(opts)
    .then((r) => {
      process.stdout.write(`${wanReport(r).join('\n')}\n\ndivergent keys: ${r.divergent}\n`);
      process.exit(r.divergent === 0 ? 0 : 1);
    })
    .catch((err: Error) => {
      process.stderr.write(`[wan] ${err.stack ?? err.message}\n`);
      process.exit(1);
    });
}
