/**
 * The `mcrepl` command line. Every command reads one config file (--config, $MCREPL_CONFIG or
 * ./mcrepl.yaml) plus MCREPL_* environment overrides.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import YAML from 'yaml';
import { redactSecrets } from '../observability/logger.js';
import { context, EXIT, reportError, type GlobalOptions } from './context.js';
import { flush } from './commands/flush.js';
import { runAll, runTailer, runWorkers } from './commands/pipeline.js';
import { schemaInstall } from './commands/schema.js';
import { status } from './commands/status.js';
import { verifyCommand, type VerifyCliOptions } from './commands/verify.js';
import { deadLettersCommand } from './commands/dead-letters.js';

const program = new Command();

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number of seconds greater than 0');
  return n;
}
const globals = (): GlobalOptions => program.opts<GlobalOptions>();

program
  .name('mcrepl')
  .description('Replicate cache writes from MySQL into memcached in every data center.')
  .option('-c, --config <file>', 'config file (YAML or JSON); default $MCREPL_CONFIG, then ./mcrepl.yaml')
  .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
  .option('--metrics-port <port>', 'serve Prometheus metrics, /healthz and /readyz on this port (run, tailer, worker; metrics.port in the config)', (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError('expected a port number (1-65535)');
    return n;
  })
  .option('--site <name>', "the site this process serves, with 'sites' in the config (tailer and run; a worker finds its data center's)")
  .showHelpAfterError()
  // Set before the subcommands are added, so they inherit it: usage errors exit 2.
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT.usage);
  })
  .addHelpText(
    'after',
    `
Environment: any option can be set as MCREPL_<SECTION>__<FIELD>, e.g. MCREPL_MYSQL__PASSWORD_FILE,
MCREPL_REDIS__PORT, MCREPL_DATACENTERS__EAST__SERVERS='["10.0.0.5:11211"]'.
Redis through Sentinel: MCREPL_REDIS__SENTINEL__NAME=mymaster and
MCREPL_REDIS__SENTINEL__NODES='["10.0.0.1:26379","10.0.0.2:26379"]' (redis.sentinel in the file).
Redis commands (status, flush) wait up to 30 s for a Sentinel failover to finish.
Exit codes: 0 ok, 1 failure, 2 bad usage or config, 3 MySQL not ready (preflight), 4 binlog purged.`,
  );

let result: Promise<number> = Promise.resolve(EXIT.ok);
const run = (fn: () => Promise<number>) => {
  result = (async () => {
    try {
      return await fn();
    } catch (err) {
      return reportError(err);
    }
  })();
};

program
  .command('run', { isDefault: true })
  .description('run the tailer and the workers of every data center (of every site, or of --site) in one process (the local default)')
  .option('--reset-checkpoint', 'ignore the saved checkpoint and start at the current end of the binlog')
  .action((opts: { resetCheckpoint?: boolean }) => run(() => runAll(context(globals(), 'mcrepl'), opts)));

program
  .command('tailer')
  .description("run only the tailer: binlog → queues (of --site's data centers; run two for a standby: one holds the lease)")
  .option('--reset-checkpoint', 'ignore the saved checkpoint and start at the current end of the binlog')
  .action((opts: { resetCheckpoint?: boolean }) => run(() => runTailer(context(globals(), 'tailer'), opts)));

program
  .command('worker')
  .description("run one data center's workers: queues → that data center's memcached servers")
  .argument('<dc...>', 'data center name(s) from the config')
  .action((dcs: string[]) => run(() => runWorkers(context(globals(), 'worker'), dcs)));

program
  .command('flush')
  .description('delete every key of a namespace in every data center; waits until all have applied it')
  .argument('<namespace>', 'namespace name (or ns_id)')
  .option('--timeout <seconds>', 'give up waiting after this long (exit 1; the flush still completes later)', positiveSeconds, 300)
  .option('--no-wait', 'return once the deletes are written to MySQL')
  .action((namespace: string, opts: { wait: boolean; timeout: number }) => run(() => flush(context(globals(), 'flush', true), namespace, opts)));

program
  .command('status')
  .description('the Redis server in use, checkpoint, active tailer and worker groups, per-data-center queue depth, dead letters')
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean }) => run(() => status(context(globals(), 'status', true), opts)));

program
  .command('verify')
  .description('compare every server of every data center with the key registry (missing keys, wrong values, keys that should be gone); exit 1 if any differ')
  .argument('[namespace]', 'only this namespace (name or ns_id)')
  .option('--sample <n>', 'check n keys of the registry at random instead of all (and do not list the servers\' keys)', (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number greater than 0');
    return n;
  })
  .option('--all', 'every key of the registry, and every key each server holds (the default)')
  .option('--repair', 'copy a missing value from a server that holds it with the right digest; delete anything else wrong (readers fill it again)')
  .option('--json', 'machine-readable output')
  .action((namespace: string | undefined, opts: VerifyCliOptions) => run(() => verifyCommand(context(globals(), 'verify', true), namespace, opts)));

const dead = program.command('dead-letters').description('ops that could not be applied, kept with the reason: list, show, retry, purge');
dead
  .command('list')
  .description('the dead letters kept, newest first')
  .option('--limit <n>', 'at most this many', (v: string) => Number.parseInt(v, 10))
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean; limit?: number }) => run(() => deadLettersCommand(context(globals(), 'dead-letters', true), 'list', [], opts)));
dead
  .command('show')
  .description('one dead letter in full')
  .argument('<id>', 'its id (mcrepl dead-letters list)')
  .action((id: string) => run(() => deadLettersCommand(context(globals(), 'dead-letters', true), 'show', [id], {})));
dead
  .command('retry')
  .description('write refused ops again where they can be rebuilt and are still the latest (says why not otherwise); retried ones are removed')
  .argument('<id...>', 'their ids')
  .option('--json', 'machine-readable output')
  .action((ids: string[], opts: { json?: boolean }) => run(() => deadLettersCommand(context(globals(), 'dead-letters', true), 'retry', ids, opts)));
dead
  .command('purge')
  .description('remove these dead letters, or all of them (the running total stays)')
  .argument('[id...]', 'their ids; none: all')
  .option('--json', 'machine-readable output')
  .action((ids: string[], opts: { json?: boolean }) => run(() => deadLettersCommand(context(globals(), 'dead-letters', true), 'purge', ids, opts)));

const schema = program.command('schema').description('manage the SQL surface (tables, trigger, procedures)');
schema
  .command('install')
  .description('create the database if needed and install or upgrade every table, function, trigger and procedure of sql/')
  .action(() => run(() => schemaInstall(context(globals(), 'schema', true))));

program
  .command('config')
  .description('validate the configuration and print it with every default filled (secrets hidden)')
  .action(() =>
    run(async () => {
      const { config, configFile } = context(globals(), 'config', true);
      const shown = redactSecrets(config);
      process.stdout.write(`# ${configFile ?? 'no config file'} + environment\n${YAML.stringify(shown)}`);
      return EXIT.ok;
    }),
  );

await program.parseAsync(process.argv);
process.exitCode = await result;
// Daemons return once stopped; anything left (sockets being torn down) must not hold the exit.
if (process.exitCode !== undefined) setTimeout(() => process.exit(process.exitCode as number), 200).unref();
