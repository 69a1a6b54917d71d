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
  private readonly returning = new Map<ServerChannel, NodeJS.Timeout>();
  private readonly watched = new WeakSet<ServerChannel>();
  /** A server was ejected since the last `onAllBack`. */
  private pending = false;

  constructor(
    private readonly channels: () => readonly ServerChannel[],
    private readonly graceMs: number,
    private readonly onAllBack: () => void,
  ) {}

  /** Follows a server's health (every server of the data center, as it is added). */
  watch(c: ServerChannel): void {
    if (this.watched.has(c)) return;
    this.watched.add(c);
    c.on('health', (h) => {
      // A server that is not (or not yet) placed was never in the readers' ring: one that joins
      // is down until it is flushed, and no reader ejected it.
      if (!this.channels().includes(c)) return;
      if (h !== 'healthy') {
        this.pending = true;
        clearTimeout(this.returning.get(c));
        this.returning.delete(c);
        return;
      }
      const timer = setTimeout(() => {
        this.returning.delete(c);
        this.settle();
      }, this.graceMs);
      timer.unref();
      this.returning.set(c, timer);
    });
  }

  /** Which of `channels` readers may have ejected (by index). */
  current(channels: readonly ServerChannel[] = this.channels()): Set<number> {
    const out = new Set<number>();
    channels.forEach((c, i) => (c.health !== 'healthy' || this.returning.has(c)) && out.add(i));
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
