/**
 * Process supervision: the stack's own processes, recorded by PID (and recognised as ours by
 * their command line), started detached, waited for on their ports, stopped by PID only.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { log } from './log.js';

// ---------------------------------------------------------------------------------------------
// Process helpers

export function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A PID is ours only if it is alive and its command line carries our marker (port or path). */
export function ownedPid(file: string, marker: string): number | undefined {
  const pid = readPid(file);
  return pid !== undefined && isOurs(pid, marker) ? pid : undefined;
}

/** The process is alive (not a zombie) and its command line contains `marker`. */
export function isOurs(pid: number, marker: string): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false; // zombie
    return cmdline.includes(marker);
  } catch {
    return false;
  }
}

export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.setTimeout(500);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(false));
  });
}

export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) {
      const tail = logFile && fs.existsSync(logFile) ? `\n--- ${logFile} (tail) ---\n${fs.readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n')}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until nothing listens on `port` (a killed process holds its socket until it is gone and reaped). */
export function portReleased(what: string, port: number): Promise<void> {
  return waitUntil(`${what} to release port ${port}`, async () => !(await portOpen(port)), 10_000);
}

export function spawnDetached(cmd: string, args: string[], logFile: string, pidFile?: string, env?: NodeJS.ProcessEnv): number {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', out, out], ...(env ? { env } : {}) });
  fs.closeSync(out);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
  if (pidFile) fs.writeFileSync(pidFile, `${child.pid}\n`);
  return child.pid;
}

export async function stopPid(name: string, pidFile: string, marker: string, timeoutMs = 60_000): Promise<boolean> {
  const pid = ownedPid(pidFile, marker);
  if (pid === undefined) {
    fs.rmSync(pidFile, { force: true });
    return false;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (ownedPid(pidFile, marker) !== undefined) {
    if (Date.now() > deadline) {
      log(`${name} (pid ${pid}) did not stop after SIGTERM; sending SIGKILL`);
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  fs.rmSync(pidFile, { force: true });
  return true;
}

export const asRoot = () => process.getuid?.() === 0;

