/**
 * How far V8 lets a long-running process's heap grow past what is live.
 *
 * What a process holds is bounded by design: the tailer stops reading the binlog while
 * `tailer.maxPendingBytes` of ops wait for Redis, a large transaction streams through in chunks
 * of `tailer.batchMaxOps`, and workers apply jobs in slices. What is *live* during a 1M-row drain
 * stays near 30-40 MB of heap. The heap's size is another matter: after each full collection V8
 * lets the old generation grow to live × a factor it picks from its own speed (up to 4× for a
 * heap limit of several GB, the default on a large machine) before it collects again, so a drain's
 * short-lived garbage took the tailer to 250+ MB of RSS.
 *
 * V8's `--heap-growing-percent` fixes that factor at 1 + percent/100; V8 reads it at every full
 * collection, so setting it at start is enough (no command-line flag, no polling, no forced
 * collection). At 30 the 1M-op drain runs as fast as with V8's own factor and every process
 * stays under 200 MB (docs/BENCHMARKS.md); a smaller value collects more often for little gain.
 */
import v8 from 'node:v8';

/** Sets the heap's growing factor for the rest of this process (0 = V8's own, dynamic factor). */
export function limitHeapGrowth(percent: number): void {
  if (percent > 0) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
}
