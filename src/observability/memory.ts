/**
 * Keeps a long-running process's memory near what it really uses.
 *
 * Under a high allocation rate (a drain: binlog packets, ops, request buffers) V8 lets garbage,
 * and the Buffers it holds, pile up before it collects: peak RSS 200-250 MB per process in
 * `npm run bench`, although what is live stays far lower (~120-140 MB RSS when collecting
 * often). Once the heap has grown, collecting no longer gives the memory back to the system, so
 * the point is to collect before it grows: every `intervalMs`, if the JavaScript heap in use plus
 * Buffers is over the limit, run a full collection. If what is live is above the limit itself,
 * the next collection waits until it grew by another quarter, so a process that needs more than
 * the limit is not collected over and over.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Logger } from './logger.js';

type Gc = () => void;

/** V8's collector, exposed at run time (`--expose-gc` set now, read by a fresh context). */
function exposeGc(): Gc | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as Gc) : undefined;
  } catch {
    return undefined;
  }
}

/** JavaScript heap in use plus memory held by Buffers. */
function jsMemory(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

export class MemoryGuard {
  readonly stats = { collections: 0 };
  private threshold: number;
  private warned = false;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly softLimitBytes: number,
    private readonly logger: Logger,
    intervalMs = 100,
    private readonly gc: Gc | undefined = exposeGc(),
  ) {
    this.threshold = softLimitBytes;
    if (!gc) {
      logger.warn('cannot reach the garbage collector: memory.gcAboveMb has no effect');
      return;
    }
    this.timer = setInterval(() => this.check(), intervalMs);
    this.timer.unref();
  }

  /** Collects if the heap in use plus Buffers is over the threshold; true if it did. */
  check(used = jsMemory()): boolean {
    if (!this.gc || used < this.threshold) return false;
    this.gc();
    this.stats.collections++;
    const after = jsMemory();
    const next = Math.max(this.softLimitBytes, Math.round(after * 1.25));
    if (next > this.softLimitBytes && !this.warned) {
      this.warned = true;
      this.logger.info({ liveMb: Math.round(after / 1048576), limitMb: Math.round(this.softLimitBytes / 1048576) }, 'live memory is above memory.gcAboveMb; collecting less often');
    }
    this.threshold = next;
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
