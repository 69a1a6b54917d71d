/**
 * Where the tailer's progress is kept. A checkpoint is written only after every job before it
 * is enqueued (the low watermark), so resuming from it never skips an op; it may repeat some,
 * which the workers recognise by their transaction sequence number `t` and skip.
 */
import type { Redis } from 'ioredis';
import type { Lease } from '../coordination/lease.js';
import type { RedisKeys } from '../fanout/redis-keys.js';

/** A binlog position at a commit boundary. The GTID set is preferred; file+pos is the fallback. */
export interface Position {
  /** MySQL GTID set or MariaDB GTID position: everything up to and including this point. */
  gtidSet?: string;
  file?: string;
  pos?: number;
}

export interface Checkpoint {
  position: Position;
  /** Sequence number of the last transaction with mcrepl rows covered by `position`. */
  txnSeq: number;
  /** Identifies the stream `txnSeq` counts in; a fresh start (no checkpoint) begins a new epoch. */
  epoch: string;
  /** Unix ms when saved. */
  savedAt: number;
  /** Binlog time (unix s) of the last transaction it covers: how old the source's data is (status). */
  sourceTimeSec?: number;
  /** `host:port` of the server whose binlog the tailer was reading (status: a site's replica or, while it is far behind, the primary). */
  source?: string;
}

export interface CheckpointStore {
  load(): Promise<Checkpoint | null>;
  save(checkpoint: Checkpoint): Promise<void>;
}

export function describePosition(p: Position | undefined): string {
  if (!p) return 'none';
  if (p.gtidSet !== undefined) return `gtid ${p.gtidSet || '(empty)'}`;
  return `${p.file}:${p.pos}`;
}

export class RedisCheckpointStore implements CheckpointStore {
  /** `fence`: the tailer's lease; a save is refused (LeaseLostError) unless we still own it. */
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly fence?: Lease,
  ) {}

  async load(): Promise<Checkpoint | null> {
    const raw = await this.redis.get(this.keys.checkpoint);
    return raw ? (JSON.parse(raw) as Checkpoint) : null;
  }

  async save(checkpoint: Checkpoint): Promise<void> {
    if (this.fence) await this.fence.fenced(`redis.call('SET', KEYS[2], ARGV[2]) return 1`, [this.keys.checkpoint], [JSON.stringify(checkpoint)]);
    else await this.redis.set(this.keys.checkpoint, JSON.stringify(checkpoint));
  }
}
