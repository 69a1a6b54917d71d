/**
 * The process's Prometheus metrics (prom-client), served by the daemons (metrics-server.ts).
 * Counters and histograms are updated where things happen; gauges that describe a state (a
 * server up, a lease held, queue depths, the checkpoint's age) are filled by collectors that the
 * components register and that run at each scrape.
 */
import client from 'prom-client';

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

/** Seconds from a transaction reaching the tailer (it reads the binlog as it is written) to its ops applied on every server of a data center. */
export const applyLag = new client.Histogram({
  name: 'mcrepl_apply_lag_seconds',
  help: 'Binlog commit (read by the tailer) to applied on every server of a data center, per job (its oldest transaction)',
  labelNames: ['site', 'dc'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  registers: [registry],
});

export const sourceLag = new client.Gauge({
  name: 'mcrepl_source_lag_seconds',
  help: "How far the tailer's checkpoint is behind the head of the primary's binlog (0 when it has everything)",
  labelNames: ['site'] as const,
  registers: [registry],
});

export const sourceBehind = new client.Gauge({
  name: 'mcrepl_source_behind_transactions',
  help: "Transactions in the primary's binlog that the tailer's checkpoint does not cover yet",
  labelNames: ['site'] as const,
  registers: [registry],
});

export const opsApplied = new client.Counter({
  name: 'mcrepl_ops_applied_total',
  help: 'Ops written to a memcached server (replays of missed ops included)',
  labelNames: ['dc', 'server', 'op'] as const,
  registers: [registry],
});

export const queueJobs = new client.Gauge({
  name: 'mcrepl_queue_jobs',
  help: "Jobs in a data center's queues, by state",
  labelNames: ['dc', 'state'] as const,
  registers: [registry],
});

export const deadLetters = new client.Counter({
  name: 'mcrepl_dead_letters_total',
  help: 'Ops dead-lettered by this process (a bad row, a value a server refuses for good, a corrupt job)',
  labelNames: ['stage', 'dc'] as const,
  registers: [registry],
});

export const serverUp = new client.Gauge({
  name: 'mcrepl_server_up',
  help: 'A memcached server is healthy as its worker group sees it (1), or down or recovering (0)',
  labelNames: ['dc', 'server'] as const,
  registers: [registry],
});

export const leaseHeld = new client.Gauge({
  name: 'mcrepl_lease_held',
  help: 'This process holds the lease (1: active) or waits for it (0: standby)',
  labelNames: ['role', 'name'] as const,
  registers: [registry],
});

export const checkpointAge = new client.Gauge({
  name: 'mcrepl_checkpoint_age_seconds',
  help: "Seconds since the active tailer last saved its checkpoint (it saves at least every tailer.checkpointIntervalMs while the binlog moves)",
  labelNames: ['site'] as const,
  registers: [registry],
});

export const verifyDivergentKeys = new client.Gauge({
  name: 'mcrepl_verify_divergent_keys',
  help: 'Keys the last verification found different from the key registry',
  labelNames: ['dc'] as const,
  registers: [registry],
});

/** Fills gauges at scrape time. */
export type Collector = () => void | Promise<void>;
const collectors = new Set<Collector>();

/** Runs `fn` at each scrape until the returned function is called. */
export function addCollector(fn: Collector): () => void {
  collectors.add(fn);
  return () => collectors.delete(fn);
}

/** The gauges filled by collectors start empty at each scrape (a server that left is not reported any more). */
const COLLECTED = [sourceLag, sourceBehind, queueJobs, serverUp, leaseHeld, checkpointAge];

/** The metrics in Prometheus's text format, collectors run first (one that fails leaves its gauges out). */
export async function scrape(): Promise<string> {
  for (const g of COLLECTED) g.reset();
  await Promise.allSettled([...collectors].map((c) => c()));
  return registry.metrics();
}

export const contentType = registry.contentType;

export interface LocalSummary {
  opsApplied: number;
  /** Jobs whose apply lag this process measured, and its quantiles (a bucket's upper bound). */
  lagCount: number;
  lagP50: number | null;
  lagP99: number | null;
}

/** What this process measured, per data center (for the status page). */
export async function localSummary(): Promise<Record<string, LocalSummary>> {
  const out: Record<string, LocalSummary> = {};
  const of = (dc: string) => (out[dc] ??= { opsApplied: 0, lagCount: 0, lagP50: null, lagP99: null });
  for (const v of (await opsApplied.get()).values) of(String(v.labels.dc)).opsApplied += v.value;
  const buckets = new Map<string, { le: number; count: number }[]>();
  for (const v of (await applyLag.get()).values) {
    if (v.metricName !== 'mcrepl_apply_lag_seconds_bucket') continue;
    const dc = String(v.labels.dc);
    const raw = (v.labels as Record<string, string | number | undefined>).le;
    const le = raw === '+Inf' ? Infinity : Number(raw);
    (buckets.get(dc) ?? buckets.set(dc, []).get(dc)!).push({ le, count: v.value });
  }
  for (const [dc, list] of buckets) {
    list.sort((a, b) => a.le - b.le);
    const total = list.at(-1)?.count ?? 0;
    const s = of(dc);
    s.lagCount = total;
    const q = (p: number) => list.find((b) => b.count >= p * total)?.le ?? null;
    if (total > 0) {
      s.lagP50 = q(0.5);
      s.lagP99 = q(0.99);
    }
  }
  return out;
}
