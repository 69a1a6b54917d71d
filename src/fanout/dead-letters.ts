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
  /** Its number in this Redis (given when recorded; entries from before numbering have none). */
  id?: number;
  /**
   * What a retry needs (a worker's refused op): the op with its key's bytes (hex) and, for a set,
   * its value (base64) when it was small enough to keep (`valueBytes` says how big it was).
   */
  retry?: { kind: 'set' | 'delete'; nsId: number; key: string; value?: string; valueBytes?: number; expiresAt?: number };
}

/**
 * KEYS[1] the list, KEYS[2] the running total; ARGV[1] entries kept, ARGV[2..] entries (JSON,
 * numbered here: the total before them + 1, ...). Returns the last number given.
 */
const ADD = `
local n = redis.call('INCRBY', KEYS[2], #ARGV - 1)
local first = n - (#ARGV - 1) + 1
for i = 2, #ARGV do
  local e = cjson.decode(ARGV[i])
  e['id'] = first + i - 2
  redis.call('LPUSH', KEYS[1], cjson.encode(e))
end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return n`;

/** Entries, and their bytes, per script call of `add`. */
const ADD_SLICE_ENTRIES = 500;
const ADD_SLICE_BYTES = 4 * 1024 * 1024;
/** Entries read per LRANGE when looking for some. */
const SCAN_PAGE = 200;

export class DeadLetterStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly maxEntries: number,
  ) {}

  /** Records entries, numbering them (the running total doubles as the last number given). */
  async add(entries: readonly DeadLetter[]): Promise<void> {
    if (entries.length === 0) return;
    for (const e of entries) deadLetterCount.inc({ stage: e.stage, dc: e.dc ?? '' });
    // A script call per slice: a job's refusals may be thousands, each with its value kept.
    let slice: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (slice.length === 0) return;
      await this.redis.eval(ADD, 2, this.keys.deadLetters, this.keys.deadLetterCount, String(this.maxEntries), ...slice);
      slice = [];
      bytes = 0;
    };
    for (const e of entries) {
      const json = JSON.stringify(e);
      slice.push(json);
      bytes += json.length;
      if (slice.length >= ADD_SLICE_ENTRIES || bytes >= ADD_SLICE_BYTES) await flush();
    }
    await flush();
  }

  /** Each raw entry, newest first, a page at a time, until `visit` returns true. */
  private async scan(visit: (raw: string, e: DeadLetter) => boolean | void): Promise<void> {
    for (let at = 0; ; at += SCAN_PAGE) {
      const page = await this.redis.lrange(this.keys.deadLetters, at, at + SCAN_PAGE - 1);
      for (const raw of page) if (visit(raw, JSON.parse(raw) as DeadLetter)) return;
      if (page.length < SCAN_PAGE) return;
    }
  }

  /** Entries, newest first (at most `limit`). */
  async list(limit = this.maxEntries): Promise<DeadLetter[]> {
    return this.recent(limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    let found: DeadLetter | undefined;
    await this.scan((_, e) => {
      if (e.id === id) found = e;
      return found !== undefined;
    });
    return found;
  }

  /** Removes the entries with these numbers; how many were there. */
  async remove(ids: readonly number[]): Promise<number> {
    const want = new Set(ids);
    const raws: string[] = [];
    await this.scan((raw, e) => {
      if (e.id !== undefined && want.delete(e.id)) raws.push(raw);
      return want.size === 0;
    });
    let removed = 0;
    for (const raw of raws) removed += await this.redis.lrem(this.keys.deadLetters, 1, raw);
    return removed;
  }

  /** Removes every entry kept (the running total stays); how many there were. */
  async purge(): Promise<number> {
    const [[, n]] = (await this.redis.multi().llen(this.keys.deadLetters).del(this.keys.deadLetters).exec()) as [[unknown, number]];
    return n;
  }

  async count(): Promise<number> {
    return Number((await this.redis.get(this.keys.deadLetterCount)) ?? 0);
  }

  async recent(n: number): Promise<DeadLetter[]> {
    const rows = await this.redis.lrange(this.keys.deadLetters, 0, n - 1);
    return rows.map((r) => JSON.parse(r) as DeadLetter);
  }
}
