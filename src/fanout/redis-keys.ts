/**
 * Every Redis key and BullMQ queue name mcrepl uses is built here, and only here.
 *
 * Queue names carry a hash tag, `{dc.partition}`, so that all keys of one queue would live in
 * one Redis Cluster slot (Redis Cluster is not supported yet: other keys are not tagged). BullMQ
 * prefixes them with the configured prefix: `<prefix>:{east.3}:wait`, and so on.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** BullMQ queue of one (data center, partition). */
  queueName(dc: string, partition: number): string {
    return `{${dc}.${partition}}`;
  }

  /** A key of a BullMQ queue (as BullMQ builds it): `wait`, `active`, or a job id. */
  queueKey(dc: string, partition: number, suffix: string): string {
    return `${this.prefix}:${this.queueName(dc, partition)}:${suffix}`;
  }

  /** The tailer's checkpoint: position, transaction sequence and epoch (JSON). */
  get checkpoint(): string {
    return `${this.prefix}:checkpoint`;
  }

  /** Partition count and data centers the tailer fans out to (JSON). */
  get topology(): string {
    return `${this.prefix}:topology`;
  }

  /** Lease held by the active tailer. */
  get tailerLease(): string {
    return `${this.prefix}:lease:tailer`;
  }

  /** Lease held by the active worker group of a data center. */
  workerLease(dc: string): string {
    return `${this.prefix}:lease:dc:${dc}`;
  }

  /** Hash partition → "epoch:t" of the last op a data center applied. */
  applied(dc: string): string {
    return `${this.prefix}:applied:${dc}`;
  }

  /** Ops a down server missed: hash key → last op (plus `:bytes`). */
  missed(dc: string, address: string): string {
    return `${this.prefix}:missed:${dc}:${address}`;
  }

  /** The servers a data center's keys are placed on, as last put in place (JSON; ketama membership). */
  ring(dc: string): string {
    return `${this.prefix}:ring:${dc}`;
  }

  /** A data center's last change of servers and its progress (JSON), for `mcrepl status`. */
  migration(dc: string): string {
    return `${this.prefix}:migration:${dc}`;
  }

  /** Hash server address → its state as the workers last saw it (health, flush needed). */
  servers(dc: string): string {
    return `${this.prefix}:servers:${dc}`;
  }

  /** Set of partitions of a data center that have applied a flush marker. */
  flushDone(flushId: number, token: string, dc: string): string {
    return `${this.prefix}:flush:${flushId}:${token}:${dc}`;
  }

  /**
   * The packed ops of one partition of one tailer batch, shared by every data center's job:
   * hash `d` → the bytes, plus one field per data center that has not applied them yet.
   * `id` is `<epoch>:<partition>:<first t>:<last t>`.
   */
  payload(id: string): string {
    return `${this.prefix}:payload:${id}`;
  }

  get payloadPattern(): string {
    return `${this.prefix}:payload:*`;
  }

  /** Dead letters, newest first (JSON entries), and their running total. */
  get deadLetters(): string {
    return `${this.prefix}:dead`;
  }

  get deadLetterCount(): string {
    return `${this.prefix}:dead:count`;
  }
}
