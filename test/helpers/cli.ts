/** Runs the real `mcrepl` command line as a child process, as an operator would. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../scripts/stack.js';
import type { ResolvedConfig } from '../../src/config/schema.js';

export const MCREPL_BIN = path.join(repoRoot, 'bin', 'mcrepl.js');

/** Config files written by this process, removed when it exits. */
const written = new Set<string>();
process.on('exit', () => {
  for (const dir of written) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Writes the config to a temp file (secrets stay in their files: only passwordFile is written),
 * removed when this process exits.
 */
export function writeConfigFile(config: ResolvedConfig): string {
  const c = structuredClone(config) as ResolvedConfig;
  // Every section with a password file (mysql, its role accounts, redis, memcached).
  const strip = (o: unknown): void => {
    if (!o || typeof o !== 'object') return;
    const rec = o as Record<string, unknown>;
    if (rec.passwordFile) delete rec.password;
    for (const v of Object.values(rec)) strip(v);
  };
  strip(c);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcrepl-test-'));
  written.add(dir);
  const file = path.join(dir, 'mcrepl.json');
  fs.writeFileSync(file, JSON.stringify(c, null, 2), { mode: 0o600 });
  return file;
}

/** Every secret in a resolved config (mysql, its role accounts, redis, memcached): what must never be printed. */
export function secretsOf(config: ResolvedConfig): string[] {
  const found: string[] = [];
  const walk = (o: unknown): void => {
    if (!o || typeof o !== 'object') return;
    for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
      if (k === 'password' && typeof v === 'string' && v.length > 0) found.push(v);
      else walk(v);
    }
  };
  walk(config);
  return [...new Set(found)];
}

export class McreplProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [MCREPL_BIN, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Waits for a line of output (stdout or stderr) matching `re`. */
  async waitForOutput(re: RegExp, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    while (!re.test(this.stdout) && !re.test(this.stderr)) {
      if (exited) throw new Error(`mcrepl exited before printing ${re}:\n${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`mcrepl did not print ${re} within ${timeoutMs} ms:\n${this.stdout.slice(-3000)}\n${this.stderr.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}

/** Runs a command to completion. */
export async function mcrepl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new McreplProcess(args, env);
  const { code } = await p.exited;
  return { code, stdout: p.stdout, stderr: p.stderr };
}
