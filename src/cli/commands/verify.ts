/**
 * `mcrepl verify [namespace] [--sample N | --all] [--repair] [--json]`: every server of every data
 * center against the key registry (src/verify/verifier.ts), with a progress bar. Exit 0 when
 * consistent, 1 when divergence remains (after --repair: what it could not repair).
 */
import cliProgress from 'cli-progress';
import { mysqlFor } from '../../registry/accounts.js';
import { connectMysql } from '../../registry/mysql.js';
import { resolveNamespace } from '../../registry/namespaces.js';
import { verifyDivergentKeys } from '../../observability/metrics.js';
import { verify, type Divergence } from '../../verify/verifier.js';
import { EXIT, type Context } from '../context.js';

export interface VerifyCliOptions {
  sample?: number;
  all?: boolean;
  repair?: boolean;
  json?: boolean;
}

export async function verifyCommand(ctx: Context, namespace: string | undefined, opts: VerifyCliOptions): Promise<number> {
  let nsId: number | undefined;
  if (namespace !== undefined) {
    const conn = await connectMysql(mysqlFor(ctx.config.mysql, 'admin'));
    try {
      nsId = (await resolveNamespace(conn, namespace)).nsId;
    } finally {
      await conn.end();
    }
  }
  const tty = process.stderr.isTTY === true && !opts.json;
  const bar = tty ? new cliProgress.SingleBar({ format: ' verify [{bar}] {value}/{total} key reads', hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
  let started = false;
  const result = await verify(ctx.config, {
    ...(nsId !== undefined ? { namespace: nsId } : {}),
    ...(opts.sample !== undefined && !opts.all ? { sample: opts.sample } : {}),
    ...(opts.repair ? { repair: true } : {}),
    progress: (done, total) => {
      if (!bar) return;
      if (!started) bar.start(total, 0);
      started = true;
      bar.update(done);
    },
  }).finally(() => bar?.stop());
  for (const dc of Object.keys(ctx.config.datacenters)) verifyDivergentKeys.set({ dc }, new Set(result.divergent.filter((d) => d.dc === dc).map((d) => d.keyHex)).size);
  const remaining = result.divergent.filter((d) => !d.repaired || !/^(copied|deleted$)/.test(d.repaired));
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ...result, consistent: remaining.length === 0 }, null, 2)}\n`);
  } else {
    const out = (s: string) => process.stdout.write(`${s}\n`);
    out(`checked ${result.keys} key${result.keys === 1 ? '' : 's'} of the registry${opts.sample !== undefined && !opts.all ? ' (a sample)' : ' and every key each server holds'} on ${result.servers} servers`);
    if (result.settled) out(`${result.settled} difference${result.settled === 1 ? '' : 's'} seen first were gone once the pipeline had applied what was committed before (not divergent)`);
    if (result.unsettled) out(`note: ${result.unsettled}; the second look was made anyway`);
    for (const d of result.divergent) out(`${describe(d)}${d.repaired ? ` → ${d.repaired}` : ''}`);
    out(result.divergent.length === 0 ? 'consistent: every server holds what the registry says' : `${result.divergent.length} divergent entr${result.divergent.length === 1 ? 'y' : 'ies'}${opts.repair ? `, ${result.divergent.length - remaining.length} repaired` : ' (mcrepl verify --repair fixes them)'}`);
  }
  return remaining.length === 0 ? EXIT.ok : EXIT.failure;
}

function describe(d: Divergence): string {
  const printable = /^[\x21-\x7e]*$/.test(d.key) ? d.key : `0x${d.keyHex}`;
  return `${d.dc} ${d.server} ${printable}: ${d.problem} (${d.detail})`;
}
