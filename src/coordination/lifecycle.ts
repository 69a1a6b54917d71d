/**
 * The lifecycle shared by the long-running components (tailer, data-center worker group): a
 * closed set of states, changed only through `set`, which logs and notifies.
 */
import type { Logger } from '../observability/logger.js';
import type { Lease } from './lease.js';

export type LifecycleState = 'created' | 'waiting-for-lease' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export class Lifecycle {
  private current: LifecycleState = 'created';

  constructor(
    private readonly label: string,
    private readonly logger: Logger,
    private readonly onChange: (s: LifecycleState) => void,
  ) {}

  get state(): LifecycleState {
    return this.current;
  }

  set(s: LifecycleState): void {
    if (s === this.current) return;
    this.current = s;
    this.logger.info({ state: s }, `${this.label} ${s}`);
    this.onChange(s);
  }

  /** Waits for the lease (a standby stays here), then moves on to starting. */
  async acquire(lease: Lease, signal: AbortSignal): Promise<void> {
    this.set('waiting-for-lease');
    await lease.acquire(signal);
    this.set('starting');
  }
}
