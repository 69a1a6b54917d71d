/**
 * Dead letters: ops that can never be applied (bad key, value too large, ...) are kept here
 * with the reason, instead of stopping the pipeline or vanishing. Newest first, bounded; the
 * running total counts every one ever recorded.
 */
import type { Redis } from 'ioredis';
import { deadLetters as deadLetterCount } from '../observability/metrics.js';
import type { RedisKeys } from './redis-keys.js';

export interface DeadLetter {
  /** When it was recorded (ISO time). */
  at: string;
  /** Who refused it: the tailer (bad row) or a data center's worker (server refused it). */
  stage: 'tailer' | 'worker';
  /** Data center and server, for worker dead letters. */
  dc?: string;
  server?: string;
  reason: string;
  /** The op or row, printable: key as text or 0x-hex, value length rather than bytes. */
  op: Record<string, unknown>;
  /** Source position: GTID (or file:pos) of the transaction. */
  source?: string;
  /** What was done instead, e.g. the key deleted so that no server keeps an older value. */
  action?: string;
}

export class DeadLetterStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly maxEntries: number,
  ) {}

  async add(entries: readonly DeadLetter[]): Promise<void> {
    if (entries.length === 0) return;
    for (const e of entries) deadLetterCount.inc({ stage: e.stage, dc: e.dc ?? '' });
    await this.redis
      .multi()
      .lpush(this.keys.deadLetters, ...entries.map((e) => JSON.stringify(e)))
      .ltrim(this.keys.deadLetters, 0, this.maxEntries - 1)
      .incrby(this.keys.deadLetterCount, entries.length)
      .exec();
  }

  async count(): Promise<number> {
    return Number((await this.redis.get(this.keys.deadLetterCount)) ?? 0);
  }

  async recent(n: number): Promise<DeadLetter[]> {
    const rows = await this.redis.lrange(this.keys.deadLetters, 0, n - 1);
    return rows.map((r) => JSON.parse(r) as DeadLetter);
  }
}
