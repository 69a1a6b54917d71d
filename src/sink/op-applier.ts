/**
 * Applies a job's writes to a data center's servers.
 *
 * 1. Coalesce: only the last op per key matters for the state a job leaves behind, so each key
 *    is written once. That also makes the remaining ops independent of each other: any subset
 *    can be retried or kept for later without reordering writes to one key.
 * 2. Route: which servers get which op (`replicate`: all of them).
 * 3. Each server's channel applies its ops, or keeps them for it while it is down (see
 *    ServerChannel): a dead server does not hold back the others.
 * 4. If no server of the data center is healthy, the job waits: its ops stay in the queue
 *    (Redis) rather than pile up in memory, and the data center catches up in order later.
 */
import { McreplError } from '../errors.js';
import { coalesce } from '../fanout/op.js';
import type { Logger } from '../observability/logger.js';
import type { Route } from './routing.js';
import type { ServerChannel, WriteableOp } from './server-channel.js';

export type { Refusal, WriteableOp } from './server-channel.js';
export { toWrite } from './server-channel.js';
export { coalesce } from '../fanout/op.js';

export interface ApplierOptions {
  logger: Logger;
  /** Aborted on shutdown: a job waiting for a healthy server rejects with the abort reason. */
  signal: AbortSignal;
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
    const perServer = this.route.assign(distinct ? ops : coalesce(ops), (op) => op.key);
    await Promise.all(this.channels.map((c, i) => c.submit(perServer[i] ?? [])));
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
