/**
 * `mcrepl dead-letters list | show <id> | retry <id...> | purge [id...]` (`--json`): the dead
 * letters each site's Redis keeps (newest first). With sites, an id is `<site>/<number>`.
 */
import { sitesOf, type Site } from '../../config/sites.js';
import { withRedis } from '../../coordination/redis.js';
import { DeadLetterStore, type DeadLetter } from '../../fanout/dead-letters.js';
import { RedisKeys } from '../../fanout/redis-keys.js';
import { retryDeadLetter, type RetryOutcome } from '../../sink/dead-letter-retry.js';
import { EXIT, type Context } from '../context.js';
import { ConfigError } from '../../errors.js';

type Entry = DeadLetter & { site: string; ref: string };

function withStore<T>(site: Site, fn: (store: DeadLetterStore) => Promise<T>): Promise<T> {
  return withRedis(site.config.redis, 'dead-letters', (redis) => fn(new DeadLetterStore(redis, new RedisKeys(site.config.redis.prefix), site.config.deadLetters.maxEntries)));
}

const refOf = (ctx: Context, site: Site, e: DeadLetter) => (e.id === undefined ? '-' : ctx.config.sites ? `${site.name}/${e.id}` : String(e.id));

async function all(ctx: Context, limit?: number): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const site of sitesOf(ctx.config)) {
    const list = await withStore(site, (s) => s.list(limit));
    out.push(...list.map((e) => ({ ...e, site: site.name, ref: refOf(ctx, site, e) })));
  }
  return out;
}

/** The site and number an id names. */
function parseRef(ctx: Context, ref: string): { site: Site; id: number } {
  const sites = sitesOf(ctx.config);
  const m = /^(?:([^/]+)\/)?(\d+)$/.exec(ref);
  const site = m?.[1] !== undefined ? sites.find((s) => s.name === m[1]) : sites.length === 1 ? sites[0] : undefined;
  if (!m || !site) throw new ConfigError([`dead letter '${ref}': expected ${ctx.config.sites ? '<site>/<number>, e.g. ' + sites[0]!.name + '/12' : 'a number'} (mcrepl dead-letters list)`]);
  return { site, id: Number(m[2]) };
}

function line(e: Entry): string {
  const op = e.op as { op?: string; key?: string; valueBytes?: number };
  const where = e.stage === 'worker' ? `worker ${e.dc ?? ''} ${e.server ?? ''}`.trim() : 'tailer';
  return `${e.ref.padStart(6)}  ${e.at}  ${where}  ${op.op ?? ''} ${op.key ?? ''}${op.valueBytes !== undefined ? ` (${op.valueBytes} bytes)` : ''}: ${e.reason}${e.action ? `; ${e.action}` : ''}`;
}

export async function deadLettersCommand(ctx: Context, action: 'list' | 'show' | 'retry' | 'purge', refs: string[], opts: { json?: boolean; limit?: number }): Promise<number> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  if (action === 'list') {
    const entries = await all(ctx, opts.limit);
    if (opts.json) out(JSON.stringify(entries, null, 2));
    else if (entries.length === 0) out('no dead letters');
    else for (const e of entries) out(line(e));
    return EXIT.ok;
  }
  if (action === 'show') {
    const { site, id } = parseRef(ctx, refs[0] ?? '');
    const e = await withStore(site, (s) => s.get(id));
    if (!e) {
      out(`no dead letter ${refs[0]} (mcrepl dead-letters list)`);
      return EXIT.failure;
    }
    out(JSON.stringify({ ...e, site: site.name }, null, 2));
    return EXIT.ok;
  }
  if (action === 'purge') {
    let removed = 0;
    if (refs.length === 0) for (const site of sitesOf(ctx.config)) removed += await withStore(site, (s) => s.purge());
    else for (const ref of refs) {
      const { site, id } = parseRef(ctx, ref);
      removed += await withStore(site, (s) => s.remove([id]));
    }
    if (opts.json) out(JSON.stringify({ removed }));
    else out(`${removed} dead letter${removed === 1 ? '' : 's'} removed`);
    return EXIT.ok;
  }
  // retry
  const results: { id: string; outcome: RetryOutcome }[] = [];
  for (const ref of refs) {
    const { site, id } = parseRef(ctx, ref);
    const e = await withStore(site, (s) => s.get(id));
    const outcome: RetryOutcome = e ? await retryDeadLetter(site.config, e) : { retried: false, why: 'no such dead letter (mcrepl dead-letters list)' };
    if (outcome.retried) await withStore(site, (s) => s.remove([id]));
    results.push({ id: ref, outcome });
  }
  if (opts.json) out(JSON.stringify(results, null, 2));
  else for (const r of results) out(`${r.id}: ${r.outcome.retried ? `retried: ${r.outcome.what}` : `not retried: ${r.outcome.why}`}`);
  return results.every((r) => r.outcome.retried) ? EXIT.ok : EXIT.failure;
}
