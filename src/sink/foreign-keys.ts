/**
 * Deletes, on each healthy server of a data center, the keys it holds but is not meant to hold
 * (`Route.holds`): what readers that ejected a server filled elsewhere for its keys, once they
 * read that server again. Left there, such a value would be served, stale, at the next
 * ejection. Only keys a server does not own are touched, and only with deletes, through the
 * server's channel (fenced, kept for it if it fails meanwhile).
 */
import { MetaClient } from './meta-client.js';
import type { Route } from './routes/route.js';
import type { ServerChannel } from './server-channel.js';

export interface ForeignKeyOptions {
  timeoutMs: number;
  signal: AbortSignal;
  /** Whether a server is read now (default: it is healthy); one that is not is left as it is. */
  usable?: (c: ServerChannel) => Promise<boolean>;
  /** After each batch of deletes (progress). */
  onDeleted?: (n: number) => Promise<void>;
}

export async function deleteForeignKeys(channels: readonly ServerChannel[], route: Route, opts: ForeignKeyOptions): Promise<number> {
  let deleted = 0;
  for (const [i, c] of channels.entries()) {
    if (!(opts.usable ? await opts.usable(c) : c.health === 'healthy')) continue;
    await MetaClient.eachKey(c.address, opts.timeoutMs, 1_000, async (keys) => {
      opts.signal.throwIfAborted();
      const foreign = keys.filter((k) => !route.holds(i, k));
      if (foreign.length === 0) return;
      await c.submit(foreign.map((key) => ({ kind: 'delete' as const, t: 0, nsId: 0, key })));
      deleted += foreign.length;
      await opts.onDeleted?.(foreign.length);
    });
  }
  return deleted;
}
