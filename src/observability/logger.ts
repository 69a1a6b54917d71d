/**
 * Structured JSON logs (pino). Secrets never reach a log line: any field named like a password
 * is redacted at the depths pino checks, and whole config objects go through `redactSecrets`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const REDACT = ['password', '*.password', '*.*.password', 'passwordFile', '*.passwordFile', 'authorization', '*.authorization'];

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Component name added to every line. */
  name?: string;
  /** Write to stderr instead of stdout (CLI commands that print results on stdout). */
  stderr?: boolean;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { pid: process.pid, ...(opts.name ? { component: opts.name } : {}) },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: opts.stderr ? 2 : 1, sync: true }),
  );
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });

const SECRET_FIELD = /^(password|passphrase|secret|token|authorization)$/i;

/** A deep copy with every secret-named field replaced by '[redacted]' (printing a config). */
export function redactSecrets<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => redactSecrets(v)) as T;
  if (!value || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_FIELD.test(k) && v !== undefined ? '[redacted]' : redactSecrets(v);
  return out as T;
}
