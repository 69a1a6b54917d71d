/**
 * Structured JSON logs (pino). Secrets never reach a log line: any field named like a password
 * is redacted wherever it appears, and config objects are logged through `redactConfig`.
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
