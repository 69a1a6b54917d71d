/**
 * `npm test`: brings the local stack up (installing what is missing), runs every unit and
 * integration test with node's test runner, and stops the stack again if it started it.
 * `--unit` runs the unit tests only (no servers needed). Extra arguments are passed to
 * `node --test` (e.g. --test-name-pattern=ttl).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { down, repoRoot, up } from './stack.js';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const passThrough = args.filter((a) => a !== '--unit');

function testFiles(dir: string): string[] {
  const abs = path.join(repoRoot, 'dist', 'test', dir);
  if (!fs.existsSync(abs)) return [];
  return fs
    .readdirSync(abs)
    .filter((f) => f.endsWith('.test.js'))
    .sort()
    .map((f) => path.join(abs, f));
}

async function main(): Promise<number> {
  const files = [...testFiles('unit'), ...(unitOnly ? [] : testFiles('integration'))];
  let startedStack = false;
  if (!unitOnly) {
    const { started } = await up();
    startedStack = started.length > 0;
    process.stderr.write(`[test] local stack ${startedStack ? `started (${started.join(', ')})` : 'already running'}\n`);
  }
  try {
    return await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        // --test-force-exit: a file whose tests are done exits even if a failed test left a
        // connection open, instead of waiting for the 10-minute timeout.
        ['--test', '--test-concurrency=1', '--test-timeout=600000', '--test-force-exit', '--test-reporter=spec', ...passThrough, ...files],
        { stdio: 'inherit', cwd: repoRoot },
      );
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
    });
  } finally {
    if (startedStack) {
      await down();
      process.stderr.write('[test] local stack stopped\n');
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[test] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
