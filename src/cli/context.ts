/** What every command shares: config loading, the logger, and exit codes. */
import { loadConfig } from '../config/load.js';
import type { ResolvedConfig } from '../config/schema.js';
import { BinlogPurgedError, ConfigError, McreplError, PreflightError, errorMessage } from '../errors.js';
import { createLogger, type Logger } from '../observability/logger.js';

export const EXIT = {
  ok: 0,
  /** A runtime failure (a component died, a flush timed out, ...). */
  failure: 1,
  /** Invalid command line or configuration. */
  usage: 2,
  /** The MySQL server is not set up for mcrepl (preflight). */
  preflight: 3,
  /** The binlog needed to resume was purged. */
  binlogPurged: 4,
} as const;

export interface GlobalOptions {
  config?: string;
  logLevel?: string;
  metricsPort?: number;
  site?: string;
}

export interface Context {
  config: ResolvedConfig;
  configFile?: string;
  logger: Logger;
  /** Reads the config again, as at start (file, environment, command line): SIGHUP. */
  reload: () => ResolvedConfig;
}

/**
 * Loads the config and makes the logger. Daemons log JSON to stdout; commands that print a
 * result (status, flush, schema) log to stderr so their output stays clean.
 */
export function context(opts: GlobalOptions, component: string, logToStderr = false): Context {
  const load = () => loadConfig({ ...(opts.config ? { file: opts.config } : {}), overrides: { 'log.level': opts.logLevel, site: opts.site, 'metrics.port': opts.metricsPort } });
  const { config, file } = load();
  const logger = createLogger({ level: config.log.level, name: component, stderr: logToStderr });
  return { config, ...(file ? { configFile: file } : {}), logger, reload: () => load().config };
}

/** Prints an error the way a user can act on it, and returns the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`mcrepl: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof PreflightError) {
    process.stderr.write(`mcrepl: ${err.message}\n`);
    return EXIT.preflight;
  }
  if (err instanceof BinlogPurgedError) {
    process.stderr.write(`mcrepl: ${err.message}\n`);
    return EXIT.binlogPurged;
  }
  if (err instanceof McreplError) {
    process.stderr.write(`mcrepl: ${err.message}\n`);
    return EXIT.failure;
  }
  process.stderr.write(`mcrepl: ${err instanceof Error && process.env.MCREPL_DEBUG ? err.stack : errorMessage(err)}\n`);
  return EXIT.failure;
}
