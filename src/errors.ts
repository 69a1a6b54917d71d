/**
 * The error hierarchy. Every error mcrepl raises on purpose carries a stable `code`, whether
 * retrying can help (`retriable`), and its `cause`. Retry only what is retriable; a TypeError
 * is a bug and is never retried.
 */
export class McreplError extends Error {
  readonly code: string;
  readonly retriable: boolean;

  constructor(code: string, message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** The configuration is invalid; `problems` lists every mistake found, each with its fix. */
export class ConfigError extends McreplError {
  constructor(readonly problems: string[]) {
    super('CONFIG_INVALID', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** The MySQL server is not set up for mcrepl; `problems` lists every problem with its fix. */
export class PreflightError extends McreplError {
  constructor(readonly problems: string[]) {
    super('PREFLIGHT_FAILED', `the MySQL server is not ready for mcrepl:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** The binlog position we must resume from no longer exists on the server (error 1236). */
export class BinlogPurgedError extends McreplError {
  constructor(message: string, cause?: unknown) {
    super('BINLOG_PURGED', message, { cause });
  }
}

/** A memcached request failed; `retriable` says whether the server may accept it later. */
export class MemcachedError extends McreplError {
  constructor(readonly server: string, message: string, retriable: boolean, cause?: unknown) {
    super(retriable ? 'MEMCACHED_UNAVAILABLE' : 'MEMCACHED_REJECTED', `${server}: ${message}`, { retriable, cause });
  }
}

/** This process no longer holds the lease that lets it act (tailer or data-center workers). */
/** Retriable: a fresh instance can wait for the lease again and resume from Redis. */
export class LeaseLostError extends McreplError {
  constructor(readonly key: string) {
    super('LEASE_LOST', `lost the lease ${key}; another process may have taken over`, { retriable: true });
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
