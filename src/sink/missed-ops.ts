/**
 * Ops a memcached server missed while it was down, kept in Redis so that they outlive the worker:
 * one hash per server, field = key, value = the key's last op (so they are coalesced per key),
 * bounded in keys and bytes. A worker that crashes and restarts replays them all the same.
 */
import type { Redis } from 'ioredis';
import { runScript } from '../coordination/redis.js';
import { decodeOps, encodeOps } from '../fanout/job-codec.js';
import type { RedisKeys } from '../fanout/redis-keys.js';
import type { WriteableOp } from '../fanout/op.js';

export interface MissedEntry {
  op: WriteableOp;
  /** The stored bytes, so that only this exact op is removed once replayed. */
  raw: Buffer;
}

/** Where a down server's missed ops are kept. */
export interface MissedOpStore {
  /** Keeps ops (newer ones replace older ones of the same key); false if the bound overflowed and everything kept was dropped. */
  add(ops: readonly WriteableOp[]): Promise<boolean>;
  count(): Promise<number>;
  /** Some of the kept ops (any order: they are of distinct keys). */
  take(limit: number): Promise<MissedEntry[]>;
  /** Forgets replayed entries, unless a newer op for the key arrived meanwhile. */
  ack(entries: readonly MissedEntry[]): Promise<void>;
  clear(): Promise<void>;
}

const ADD = `
local delta = 0
for i = 3, #ARGV, 2 do
  local old = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if old == 0 and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then delta = delta + string.len(ARGV[i]) end
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  delta = delta + string.len(ARGV[i + 1]) - old
end
local bytes = redis.call('INCRBY', KEYS[2], delta)
local n = redis.call('HLEN', KEYS[1])
if n > tonumber(ARGV[1]) or bytes > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
return n`;

const ACK = `
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + string.len(ARGV[i]) + string.len(ARGV[i + 1])
  end
end
if removed > 0 then
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) else redis.call('DECRBY', KEYS[2], removed) end
end
return removed`;

/** Ops kept per script call. */
const ADD_SLICE = 1_000;

/** Runs a Lua script that writes (the worker passes its lease's `runFenced`). */
export type ScriptRunner = (script: string, keys: string[], args: (string | Buffer)[]) => Promise<unknown>;

const CLEAR = `redis.call('DEL', KEYS[1], KEYS[2]) return 1`;

export class RedisMissedOpStore implements MissedOpStore {
  private readonly hash: string;
  private readonly bytes: string;
  private readonly run: ScriptRunner;

  constructor(
    private readonly redis: Redis,
    keys: RedisKeys,
    dc: string,
    address: string,
    private readonly maxKeys: number,
    private readonly maxBytes: number,
    /** Every write goes through it: a worker group that lost its lease keeps nothing any more. */
    run?: ScriptRunner,
  ) {
    this.run = run ?? ((script, k, a) => runScript(redis, script, k, a));
    this.hash = keys.missed(dc, address);
    this.bytes = `${this.hash}:bytes`;
  }

  async add(ops: readonly WriteableOp[]): Promise<boolean> {
    // A script call per ADD_SLICE ops: a script's arguments are a Lua stack, which a whole
    // large job would overflow (and one long script would hold Redis for everyone).
    for (let i = 0; i < ops.length; i += ADD_SLICE) {
      const args: (string | Buffer)[] = [String(this.maxKeys), String(this.maxBytes)];
      for (let j = i; j < Math.min(ops.length, i + ADD_SLICE); j++) args.push(ops[j]!.key, encodeOps([ops[j]!]));
      const n = (await this.run(ADD, [this.hash, this.bytes], args)) as number;
      if (n < 0) return false; // overflowed: everything kept is gone, the server will be flushed
    }
    return true;
  }

  count(): Promise<number> {
    return this.redis.hlen(this.hash);
  }

  async take(limit: number): Promise<MissedEntry[]> {
    // A SCAN page may be empty while more remain: follow the cursor until something is found
    // or the scan is complete.
    const out: MissedEntry[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscanBuffer(this.hash, cursor, 'COUNT', limit);
      cursor = next.toString();
      for (let i = 1; i < flat.length; i += 2) {
        const raw = flat[i]!;
        const op = decodeOps(raw)[0];
        if (op && op.kind !== 'flush') out.push({ op, raw });
      }
    } while (out.length === 0 && cursor !== '0');
    return out;
  }

  async ack(entries: readonly MissedEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const args: Buffer[] = [];
    for (const e of entries) args.push(e.op.key, e.raw);
    await this.run(ACK, [this.hash, this.bytes], args);
  }

  async clear(): Promise<void> {
    await this.run(CLEAR, [this.hash, this.bytes], []);
  }
}

/** In memory, for tests and tools. */
export class MemoryMissedOpStore implements MissedOpStore {
  readonly map = new Map<string, MissedEntry>();

  constructor(private readonly maxKeys = Number.MAX_SAFE_INTEGER) {}

  async add(ops: readonly WriteableOp[]): Promise<boolean> {
    for (const op of ops) this.map.set(op.key.toString('latin1'), { op, raw: encodeOps([op]) });
    if (this.map.size > this.maxKeys) {
      this.map.clear();
      return false;
    }
    return true;
  }

  async count(): Promise<number> {
    return this.map.size;
  }

  async take(limit: number): Promise<MissedEntry[]> {
    return [...this.map.values()].slice(0, limit);
  }

  async ack(entries: readonly MissedEntry[]): Promise<void> {
    for (const e of entries) {
      const k = e.op.key.toString('latin1');
      if (this.map.get(k)?.raw.equals(e.raw)) this.map.delete(k);
    }
  }

  async clear(): Promise<void> {
    this.map.clear();
  }
}
