import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const memoryModule = fileURLToPath(new URL('../../src/observability/memory.js', import.meta.url));

/**
 * Peak heap size of a child process that keeps a rolling window of ~30 MB of objects live while
 * it allocates 3,000,000 more (a drain's pattern: everything dies young or mid-aged).
 */
async function peakHeapMb(percent: number): Promise<number> {
  const script = `
    const { limitHeapGrowth } = await import(${JSON.stringify(memoryModule)});
    limitHeapGrowth(${percent});
    const ring = new Array(200000);
    let peak = 0;
    for (let i = 0; i < 3e6; i++) {
      ring[i % ring.length] = { a: i, b: 'x' + i, c: Buffer.allocUnsafe(64) };
      if (i % 10000 === 0) peak = Math.max(peak, process.memoryUsage().heapTotal);
    }
    process.stdout.write(String(peak / 1048576));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  assert.equal(code, 0);
  return Number(out);
}

test("a growing percent bounds the heap at run time (V8 reads the flag at each collection; no command-line flag, no forced collection)", { timeout: 60_000 }, async (t) => {
  const v8Own = await peakHeapMb(0);
  const limited = await peakHeapMb(20);
  t.diagnostic(`peak heap: ${limited.toFixed(0)} MB at 20 %, ${v8Own.toFixed(0)} MB with V8's own factor`);
  assert.ok(limited < v8Own * 0.8, `heap peak ${limited.toFixed(0)} MB with 20 %, ${v8Own.toFixed(0)} MB with V8's own factor`);
});
