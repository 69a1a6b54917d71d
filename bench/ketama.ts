/** The drain into a sharded data center (ketama, replicas 1 and 2) against replicate. */
import { datacenterSchema, type ResolvedConfig } from '../src/config/schema.js';
import { type Position } from '../src/source/checkpoint-store.js';
import { PrivateMemcached } from '../test/helpers/memcached-server.js';
import { check, holdsOf } from '../scripts/harness.js';
import { say, fmt, mb, type Ctx, NS } from './context.js';
import { type DrainResult } from './pipeline.js';
import { drain } from './drain.js';

/**
 * The backlog drained into one data center of three servers of its own (private memcached):
 * `replicate` (every key on all three), then `ketama` with replicas 1 and 2 (each key on one or
 * two). Each drain is checked against MySQL, each key on the servers it belongs on.
 */
export async function ketamaSection(ctx: Ctx, from: Position, marker: { flushId: number; token: string }): Promise<string[]> {
  const servers = await Promise.all([0, 1, 2].map(() => PrivateMemcached.create()));
  const rows: { label: string; d: DrainResult }[] = [];
  try {
    const variants: { label: string; dc: Record<string, unknown> }[] = [
      { label: 'replicate (every key on all 3)', dc: { servers: servers.map((m) => m.address) } },
      ...[1, 2].map((replicas) => ({ label: `ketama, replicas ${replicas}`, dc: { routing: 'ketama', hash: 'fnv1a_64', replicas, servers: servers.map((m) => `${m.address}:1`) } })),
    ];
    for (const [i, v] of variants.entries()) {
      // Each variant on empty servers.
      await Promise.all(servers.map((m) => m.stop()));
      await Promise.all(servers.map((m) => m.start()));
      const datacenters = { shard: datacenterSchema.parse(v.dc) } as ResolvedConfig['datacenters'];
      const sub: Ctx = { ...ctx, config: { ...ctx.config, datacenters }, servers: servers.map((m) => m.address) };
      say(`ketama: ${fmt(ctx.opts.rows)} rows into one data center of 3 servers, ${v.label}`);
      const d = await drain(sub, 'meta', from, marker, false, `ketama-${i}`);
      const result = await check(ctx.admin, sub.servers, [], { nsId: NS.backlog, holds: holdsOf(datacenters) });
      say(`ketama (${v.label}): ${fmt(d.rowsPerSec)} rows/s; checked ${fmt(result.keysChecked)} keys on their servers: ${result.divergent.size} divergent`);
      if (result.divergent.size > 0) throw new Error(`the ${v.label} drain left ${result.divergent.size} keys different from MySQL`);
      rows.push({ label: v.label, d });
    }
  } finally {
    await Promise.all(servers.map((m) => m.stop()));
  }
  const base = rows[0]!.d;
  return [
    `## Drain into a sharded data center: ${fmt(ctx.opts.rows)} set ops into one data center of 3 servers`,
    '',
    'The drain section\'s backlog, applied by one tailer and one worker group into a data center of three memcached servers of its own (empty for each row, run in the order shown), `meta` writer. `replicate` puts every key on the three; `ketama` (fnv1a_64, equal weights) on its server of the ring and, with replicas 2, on the next one. Each drain is checked against MySQL afterwards, each key on exactly the servers it belongs on.',
    '',
    '| routing | rows/s | × replicate | start | peak RSS tailer / worker | CPU s tailer / worker |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(({ label, d }) => `| ${label} | ${fmt(d.rowsPerSec)} | ${fmt(d.rowsPerSec / base.rowsPerSec, 2)} | ${fmt(d.startupSeconds, 1)} s | ${d.usage.map((u) => mb(u.peakRssBytes)).join(' / ')} | ${d.usage.map((u) => fmt(u.cpuSeconds, 1)).join(' / ')} |`),
    '',
  ];
}
