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
  /** The servers readers may have ejected (ejections.ts); default: those not healthy. */
  ejected?: () => Set<number>;
}

export class OpApplier {
  private waitingLogged = false;

  constructor(
    readonly channels: readonly ServerChannel[],
    private readonly route: Route,
    private readonly opts: ApplierOptions,
  ) {}

  /** Applies `ops` on their servers; `distinct`: no two of them concern the same key already. */
  async apply(ops: readonly WriteableOp[], distinct = false): Promise<void> {
    if (ops.length === 0) return;
    await this.anyHealthy();
    const writes = distinct ? ops : coalesce(ops);
    const down = this.down();
    const perServer = this.route.assign(writes, down);
    await Promise.all(this.channels.map((c, i) => c.submit(perServer[i] ?? [])));
    // A server that went down during these writes (its ops kept for it): readers that eject it
    // read its keys elsewhere from now on, so the route's deletes for those go out as well.
    const now = this.down();
    if ([...now].some((i) => !down.has(i))) {
      const again = this.route.assign(writes, now);
      await Promise.all(
        this.channels.map((c, i) => {
          const sent = new Set((perServer[i] ?? []).map((op) => op.key.toString('latin1')));
          return c.submit((again[i] ?? []).filter((op) => op.kind === 'delete' && !sent.has(op.key.toString('latin1'))));
        }),
      );
    }
  }

  /** The servers readers may have ejected (by index). */
  private down(): Set<number> {
    if (this.opts.ejected) return this.opts.ejected();
    const out = new Set<number>();
    this.channels.forEach((c, i) => c.health !== 'healthy' && out.add(i));
    return out;
  }

  /** Waits until at least one server of the data center is healthy. */
  private async anyHealthy(): Promise<void> {
    if (this.channels.some((c) => c.health === 'healthy')) return;
    if (!this.waitingLogged) {
      this.waitingLogged = true;
      this.opts.logger.warn({ servers: this.channels.map((c) => c.address) }, 'no memcached server of this data center is reachable: its jobs wait in the queue');
    }
    try {
      // Each waiter rejects only when the signal aborts.
      await Promise.any(this.channels.map((c) => c.whenHealthy()));
    } catch (err) {
      throw this.opts.signal.aborted ? this.opts.signal.reason : new McreplError('NO_SERVER', `no server became healthy: ${String(err)}`);
    }
    this.waitingLogged = false;
    this.opts.logger.info('a memcached server of this data center is back: its jobs resume');
  }
}
