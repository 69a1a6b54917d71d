/**
 * Which servers readers may have ejected, as far as the worker group can tell: every server
 * that is not healthy, and one that returned less than `readerRetryMs` ago (a reader such as
 * twemproxy tries an ejected server again only that long after its last failure). While a
 * server is in this set, the route also deletes its keys where such readers read them instead
 * (`ejectDeletes`).
 *
 * Once no server is ejected any more, `onAllBack` runs: what readers filled on other servers for
 * the returned ones is no longer read, and would be stale by the next ejection, so it goes
 * (see foreign-keys.ts).
 */
import type { ServerChannel } from './server-channel.js';

export class Ejections {
  /** Servers back less than `graceMs` ago, with the timer that ends their grace. */
  private readonly returning = new Map<number, NodeJS.Timeout>();
  /** A server was ejected since the last `onAllBack`. */
  private pending = false;

  constructor(
    private readonly channels: readonly ServerChannel[],
    private readonly graceMs: number,
    private readonly onAllBack: () => void,
  ) {
    channels.forEach((c, i) =>
      c.on('health', (h) => {
        if (h !== 'healthy') {
          this.pending = true;
          clearTimeout(this.returning.get(i));
          this.returning.delete(i);
          return;
        }
        const timer = setTimeout(() => {
          this.returning.delete(i);
          this.settle();
        }, graceMs);
        timer.unref();
        this.returning.set(i, timer);
      }),
    );
  }

  /** The servers readers may have ejected (by index). */
  current(): Set<number> {
    const out = new Set<number>(this.returning.keys());
    this.channels.forEach((c, i) => c.health !== 'healthy' && out.add(i));
    return out;
  }

  private settle(): void {
    if (!this.pending || this.current().size > 0) return;
    this.pending = false;
    this.onAllBack();
  }

  stop(): void {
    for (const t of this.returning.values()) clearTimeout(t);
    this.returning.clear();
  }
}
