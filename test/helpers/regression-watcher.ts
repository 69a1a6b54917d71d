/**
 * Reads keys from every server in a loop while a scenario runs and records any key that goes
 * back to an older value (the per-key order invariant), as a plain client would see it.
 */
import { MemcachedTextClient } from '../../scripts/memcached-text.js';

export interface WatchResult {
  regressions: string[];
  observations: number;
}

/**
 * `seqOf` turns a value into its sequence number (higher = written later). Each round reads every
 * key from every server (one multi-get per server); `pauseMs` between rounds keeps the watcher
 * from taking a whole core (a benchmark measures other things meanwhile).
 */
export function watchForRegressions(servers: string[], keys: string[], seqOf: (value: string) => number, pauseMs = 0): { stop(): Promise<WatchResult> } {
  let running = true;
  const result: WatchResult = { regressions: [], observations: 0 };
  const done = (async () => {
    const clients = servers.map((s) => new MemcachedTextClient(s));
    const seen = new Map<string, number>();
    try {
      while (running) {
        for (const [si, c] of clients.entries()) {
          for (let i = 0; i < keys.length; i += 100) {
            const got = await c.getMany(keys.slice(i, i + 100));
            for (const [k, value] of got) {
              const seq = seqOf(value.toString());
              const id = `${servers[si]} ${k}`;
              const before = seen.get(id);
              result.observations++;
              if (before !== undefined && seq < before) result.regressions.push(`${id}: ${seq} after ${before}`);
              seen.set(id, Math.max(seq, before ?? seq));
            }
          }
        }
        if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      }
    } finally {
      for (const c of clients) c.close();
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return result;
    },
  };
}
