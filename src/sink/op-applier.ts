/**
 * Applies a job's writes to a data center's servers.
 *
 * 1. Coalesce: only the last op per key matters for the state a job leaves behind, so each key
 *    is written once. That also makes the remaining ops independent of each other: any subset
 *    can be retried or kept for later without reordering writes to one key.
 * 2. Route: which servers get which op (`replicate`: all of them; `ketama`: the key's owners,
 *    the backups, and, while a server is down, a delete on the server readers fall back to).
 * 3. Each server's channel applies its ops, or keeps them for it while it is down (see
 *    ServerChannel): a dead server does not hold back the others.
 * 4. If no server of the data center is healthy, the job waits: its ops stay in the queue
 *    (Redis) rather than pile up in memory, and the data center catches up in order later.
 */
import { McreplError } from '../errors.js';
import { coalesce } from '../fanout/op.js';
import type { Logger } from '../observability/logger.js';
import type { Route } from './routes/route.js';
import type { ServerChannel, WriteableOp } from './server-channel.js';

export type { Refusal, WriteableOp } from './server-channel.js';
export { toWrite } from './server-channel.js';
export { coalesce } from '../fanout/op.js';

export interface ApplierOptions {
  logger: Logger;
  /** Aborted on shutdown: a job waiting for a healthy server rejects with the abort reason. */
  signal: AbortSignal;
  /** The servers readers may have ejected (ejections.ts), by index; default: those not healthy. */
  ejected?: (channels: readonly ServerChannel[]) => Set<number>;
}

/** The servers of a data center and how its keys are placed on them (`route.servers[i]` is `channels[i]`). */
export interface Placement {
  channels: readonly ServerChannel[];
  route: Route;
}

export class OpApplier {
  private waitingLogged = false;
  private placement: Placement;
  /** Applies under way, so that a change of placement can wait for those routed before it. */
  private readonly active = new Set<Promise<void>>();
  /** Sees every op about to be written (a migration notes the keys written while it copies). */
  private watcher: ((ops: readonly WriteableOp[]) => void) | undefined;

  constructor(
    channels: readonly ServerChannel[],
    route: Route,
    private readonly opts: ApplierOptions,
  ) {
    this.placement = { channels, route };
  }

  get placementNow(): Placement {
    return this.placement;
  }

  get channels(): readonly ServerChannel[] {
    return this.placement.channels;
  }

  get route(): Route {
    return this.placement.route;
  }

  /**
   * Places the ops of every later apply with `p`; resolves once every apply that started before
   * has finished (their ops written, or kept for their servers), so nothing routed the old way
   * lands after.
   */
  async setPlacement(p: Placement): Promise<void> {
    this.placement = p;
    await Promise.allSettled([...this.active]);
  }

  watch(fn: ((ops: readonly WriteableOp[]) => void) | undefined): void {
    this.watcher = fn;
  }

  /** Applies `ops` on their servers; `distinct`: no two of them concern the same key already. */
  async apply(ops: readonly WriteableOp[], distinct = false): Promise<void> {
    if (ops.length === 0) return;
    const work = this.applyNow(ops, distinct);
    this.active.add(work);
    try {
      await work;
    } finally {
      this.active.delete(work);
    }
  }

  private async applyNow(ops: readonly WriteableOp[], distinct: boolean): Promise<void> {
    await this.anyHealthy();
    const { channels, route } = this.placement;
    const writes = distinct ? ops : coalesce(ops);
    this.watcher?.(writes);
    const down = this.down(channels);
    const perServer = route.assign(writes, down);
    await Promise.all(channels.map((c, i) => c.submit(perServer[i] ?? [])));
    // A server that went down during these writes (its ops kept for it): readers that eject it
    // read its keys elsewhere from now on, so the route's deletes for those go out as well.
    const now = this.down(channels);
    if ([...now].some((i) => !down.has(i))) {
      const again = route.assign(writes, now);
      await Promise.all(
        channels.map((c, i) => {
          const sent = new Set((perServer[i] ?? []).map((op) => op.key.toString('latin1')));
          return c.submit((again[i] ?? []).filter((op) => op.kind === 'delete' && !sent.has(op.key.toString('latin1'))));
        }),
      );
    }
  }

  /** The servers readers may have ejected (by index). */
  private down(channels: readonly ServerChannel[]): Set<number> {
    if (this.opts.ejected) return this.opts.ejected(channels);
    const out = new Set<number>();
    channels.forEach((c, i) => c.health !== 'healthy' && out.add(i));
    return out;
  }

  /** Waits until at least one server of the data center is healthy. */
  private async anyHealthy(): Promise<void> {
    const channels = this.placement.channels;
    if (channels.some((c) => c.health === 'healthy')) return;
    if (!this.waitingLogged) {
      this.waitingLogged = true;
      this.opts.logger.warn({ servers: channels.map((c) => c.address) }, 'no memcached server of this data center is reachable: its jobs wait in the queue');
    }
    try {
      // Each waiter rejects only when the signal aborts.
      await Promise.any(channels.map((c) => c.whenHealthy()));
    } catch (err) {
      throw this.opts.signal.aborted ? this.opts.signal.reason : new McreplError('NO_SERVER', `no server became healthy: ${String(err)}`);
    }
    this.waitingLogged = false;
    this.opts.logger.info('a memcached server of this data center is back: its jobs resume');
  }
}
