/** Stopping a process a test started, by its PID. */
import type { ChildProcess } from 'node:child_process';

/** Sends `signal` to `c` (if it still runs) and waits for it to exit. */
export async function stopChild(c: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill(signal);
  await exited;
}
