/**
 * Preflight: before tailing, check everything the server must provide and report every
 * problem at once, each with its fix. The tailer refuses to start while any remains.
 */
import type { Connection } from 'mysql2/promise';
import { errorMessage, McreplError, PreflightError } from '../errors.js';

export interface PreflightResult {
  serverVersion: string;
  isMariaDb: boolean;
  /** Problems that stop the tailer. */
  problems: string[];
  /** Things that work but deserve attention. */
  warnings: string[];
}

type Row = Record<string, unknown>;

/** The connection died (the server restarting, say): that says nothing of its settings. */
function unreachable(err: unknown): McreplError | undefined {
  if (!(err as { fatal?: boolean }).fatal) return undefined;
  return new McreplError('MYSQL_UNAVAILABLE', `the MySQL server stopped answering during the checks: ${errorMessage(err)}`, { retriable: true, cause: err });
}

async function variable(conn: Connection, name: string): Promise<string | undefined> {
  try {
    const [rows] = await conn.query(`SELECT @@GLOBAL.${name} AS v`);
    const v = (rows as Row[])[0]?.v;
    return v === null || v === undefined ? undefined : String(v);
  } catch (err) {
    // The caller tries again later rather than report a setting as wrong.
    const gone = unreachable(err);
    if (gone) throw gone;
    return undefined; // no such variable on this server (or version)
  }
}

/** Whether `name` (db.table) matches a replicate_wild_* pattern: % any run, _ one character, \\ escapes. */
function wildMatch(pattern: string, name: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    else if (c === '%') re += '.*';
    else if (c === '_') re += '.';
    else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'i').test(name);
}

/** The replication filters of a replica that would drop `db`.`table`'s rows, each as a sentence. */
export function filtersDropping(filters: Partial<Record<'doDb' | 'ignoreDb' | 'doTable' | 'ignoreTable' | 'wildDoTable' | 'wildIgnoreTable', string>>, db: string, table: string): string[] {
  const list = (v: string | undefined) => (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const full = `${db}.${table}`;
  const found: string[] = [];
  const doDb = list(filters.doDb);
  if (doDb.length > 0 && !doDb.some((d) => d.toLowerCase() === db.toLowerCase())) found.push(`replicate_do_db (${doDb.join(', ')}) leaves \`${db}\` out`);
  if (list(filters.ignoreDb).some((d) => d.toLowerCase() === db.toLowerCase())) found.push(`replicate_ignore_db lists \`${db}\``);
  const doTable = list(filters.doTable);
  const wildDo = list(filters.wildDoTable);
  if ((doTable.length > 0 || wildDo.length > 0) && !doTable.some((t) => t.toLowerCase() === full.toLowerCase()) && !wildDo.some((w) => wildMatch(w, full))) {
    found.push(`replicate_do_table / replicate_wild_do_table (${[...doTable, ...wildDo].join(', ')}) leave ${full} out`);
  }
  if (list(filters.ignoreTable).some((t) => t.toLowerCase() === full.toLowerCase())) found.push(`replicate_ignore_table lists ${full}`);
  const wildIgnore = list(filters.wildIgnoreTable).filter((w) => wildMatch(w, full));
  if (wildIgnore.length > 0) found.push(`replicate_wild_ignore_table (${wildIgnore.join(', ')}) matches ${full}`);
  return found;
}

/**
 * `replica`: the server is a site's `source`, so it may be a replica: it gets a replica's checks
 * too, unless its server_id is `primaryServerId` (the primary itself, under another address).
 */
export async function preflight(conn: Connection, opts: PreflightOptions): Promise<PreflightResult> {
  try {
    return await checks(conn, opts);
  } catch (err) {
    throw unreachable(err) ?? err;
  }
}

interface PreflightOptions {
  database: string;
  serverId: number;
  table?: string;
  replica?: boolean;
  primaryServerId?: string;
}

async function checks(conn: Connection, opts: PreflightOptions): Promise<PreflightResult> {
  const table = opts.table ?? 'mc_storage';
  const problems: string[] = [];
  const warnings: string[] = [];
  const serverVersion = (await variable(conn, 'version')) ?? 'unknown';
  const isMariaDb = /mariadb/i.test(serverVersion);
  const cnf = isMariaDb ? 'my.cnf [mariadbd]' : 'my.cnf [mysqld]';

  const logBin = await variable(conn, 'log_bin');
  if (logBin !== '1' && logBin?.toUpperCase() !== 'ON') {
    problems.push(`binary logging is off; start the server with log_bin (${cnf}: log_bin=mysql-bin, plus a unique server_id) and restart it`);
  }
  const format = await variable(conn, 'binlog_format');
  if (format !== undefined && format.toUpperCase() !== 'ROW') {
    problems.push(`binlog_format is ${format}; set binlog_format=ROW in ${cnf} (SET GLOBAL binlog_format=ROW only affects new sessions)`);
  }
  const image = await variable(conn, 'binlog_row_image');
  if (image !== undefined && image.toUpperCase() !== 'FULL') {
    problems.push(`binlog_row_image is ${image}; set binlog_row_image=FULL in ${cnf}`);
  }
  const metadata = await variable(conn, 'binlog_row_metadata');
  if (metadata === undefined) {
    problems.push(`binlog_row_metadata is not supported by ${serverVersion}; mcrepl needs MySQL 8.0+ or MariaDB 10.5+`);
  } else if (metadata.toUpperCase() !== 'FULL') {
    problems.push(`binlog_row_metadata is ${metadata}; set binlog_row_metadata=FULL in ${cnf}`);
  }
  const serverId = await variable(conn, 'server_id');
  if (serverId === '0') {
    problems.push(`server_id is 0; the server cannot serve its binlog; set a non-zero server_id in ${cnf}`);
  } else if (serverId !== undefined && Number(serverId) === opts.serverId) {
    problems.push(`mysql.serverId (${opts.serverId}) equals the server's own server_id; give mcrepl a different mysql.serverId`);
  }
  if (isMariaDb) {
    if ((await variable(conn, 'log_bin_compress')) === '1') {
      problems.push(`log_bin_compress is ON; compressed binlog events cannot be decoded; set log_bin_compress=OFF in ${cnf}`);
    }
  } else {
    if ((await variable(conn, 'binlog_transaction_compression')) === '1') {
      problems.push(`binlog_transaction_compression is ON; compressed transactions cannot be decoded; set binlog_transaction_compression=OFF in ${cnf}`);
    }
    const gtidMode = await variable(conn, 'gtid_mode');
    if (gtidMode !== undefined && gtidMode.toUpperCase() !== 'ON') {
      warnings.push(`gtid_mode is ${gtidMode}; the checkpoint falls back to file+position, which does not survive a failover to another server (set gtid_mode=ON and enforce_gtid_consistency=ON)`);
    }
  }

  // Another replica registered with our server_id would be disconnected by ours, and vice versa.
  try {
    const [hosts] = await conn.query(isMariaDb ? 'SHOW SLAVE HOSTS' : 'SHOW REPLICAS');
    for (const h of hosts as Row[]) {
      if (Number(h.Server_id ?? h.Server_Id) === opts.serverId) {
        problems.push(`replica ${String(h.Host ?? '?')}:${String(h.Port ?? '?')} already uses server_id ${opts.serverId}; give mcrepl a different mysql.serverId`);
      }
    }
  } catch (err) {
    // Needs a privilege mcrepl does not otherwise need; the check is best effort.
    const gone = unreachable(err);
    if (gone) throw gone;
  }

  try {
    await conn.query('SHOW BINARY LOGS');
  } catch (err) {
    const gone = unreachable(err);
    if (gone) throw gone;
    problems.push(`cannot list binary logs (${(err as Error).message}); grant ${isMariaDb ? 'BINLOG MONITOR' : 'REPLICATION CLIENT'} and REPLICATION SLAVE to the tailer's user`);
  }
  try {
    const [grants] = await conn.query('SHOW GRANTS');
    const text = (grants as Row[]).map((g) => String(Object.values(g)[0])).join('\n').toUpperCase();
    if (!/ALL PRIVILEGES ON \*\.\*|REPLICATION (SLAVE|REPLICA)/.test(text)) {
      problems.push(`the tailer's user lacks REPLICATION SLAVE; GRANT REPLICATION SLAVE ON *.* TO <user>`);
    }
  } catch (err) {
    // SHOW GRANTS for oneself is always allowed; ignore oddities.
    const gone = unreachable(err);
    if (gone) throw gone;
  }

  const [engines] = await conn.query(`SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'BLACKHOLE'`);
  const support = String((engines as Row[])[0]?.SUPPORT ?? 'NO').toUpperCase();
  if (support !== 'YES' && support !== 'DEFAULT') {
    problems.push(`the BLACKHOLE storage engine is not available; ${isMariaDb ? 'add plugin_load_add=ha_blackhole' : 'enable the BLACKHOLE engine'} in ${cnf}`);
  }

  const [schemas] = await conn.query('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [opts.database]);
  if ((schemas as Row[]).length === 0) {
    problems.push(`database \`${opts.database}\` does not exist; create it with \`mcrepl schema install\``);
  } else {
    const [tables] = await conn.query('SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [opts.database, table]);
    const engine = (tables as Row[])[0]?.ENGINE as string | undefined;
    if (engine === undefined) {
      problems.push(`table \`${opts.database}\`.\`${table}\` does not exist; install the schema with \`mcrepl schema install\``);
    } else if (engine.toUpperCase() !== 'BLACKHOLE') {
      problems.push(`\`${opts.database}\`.\`${table}\` uses ENGINE=${engine}; it must be BLACKHOLE (ALTER TABLE ${table} ENGINE=BLACKHOLE)`);
    }
    const [triggers] = await conn.query('SELECT 1 FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?', [opts.database, table]);
    if (engine !== undefined && (triggers as Row[]).length === 0) {
      // Accounts without the TRIGGER privilege (like the tailer's) cannot see triggers at all.
      warnings.push(`cannot see a trigger on \`${opts.database}\`.\`${table}\` (none, or this account may not see triggers): without it the key registry is not kept; make sure \`mcrepl schema install\` ran`);
    }
  }
  if (opts.replica && (opts.primaryServerId === undefined || serverId !== opts.primaryServerId)) await replicaChecks(conn, { ...opts, table, isMariaDb, cnf }, problems, warnings);
  return { serverVersion, isMariaDb, problems, warnings };
}

/**
 * A replica as a site's binlog source: it must log what it applies (as the primary wrote it:
 * the format checks above hold for its own binlog), apply the storage table's rows, and not run
 * the trigger again for them (the registry rows replicate from the primary already).
 */
async function replicaChecks(
  conn: Connection,
  o: { database: string; table: string; isMariaDb: boolean; cnf: string },
  problems: string[],
  warnings: string[],
): Promise<void> {
  const logUpdates = (await variable(conn, 'log_replica_updates')) ?? (await variable(conn, 'log_slave_updates'));
  if (logUpdates !== '1' && logUpdates?.toUpperCase() !== 'ON') {
    problems.push(`this replica does not log what it replicates (log_${o.isMariaDb ? 'slave' : 'replica'}_updates is OFF), so the primary's writes never reach its binlog; set log_${o.isMariaDb ? 'slave' : 'replica'}_updates=ON in ${o.cnf} and restart it`);
  }
  if (o.isMariaDb) {
    const triggers = await variable(conn, 'slave_run_triggers_for_rbr');
    if (triggers !== undefined && triggers.toUpperCase() !== 'NO') {
      problems.push(`slave_run_triggers_for_rbr is ${triggers}: the replica would run the storage table's trigger again for replicated rows and write the key registry a second time; SET GLOBAL slave_run_triggers_for_rbr=NO (and in ${o.cnf})`);
    }
    const filters = {
      doDb: await variable(conn, 'replicate_do_db'),
      ignoreDb: await variable(conn, 'replicate_ignore_db'),
      doTable: await variable(conn, 'replicate_do_table'),
      ignoreTable: await variable(conn, 'replicate_ignore_table'),
      wildDoTable: await variable(conn, 'replicate_wild_do_table'),
      wildIgnoreTable: await variable(conn, 'replicate_wild_ignore_table'),
    };
    for (const f of filtersDropping(filters, o.database, o.table)) problems.push(`a replication filter drops the storage table's rows: ${f}; the replica's binlog would never carry them`);
  } else {
    try {
      const [rows] = await conn.query('SELECT FILTER_NAME, FILTER_RULE FROM performance_schema.replication_applier_global_filters');
      const rule = (name: string) => (rows as Row[]).filter((r) => String(r.FILTER_NAME).toUpperCase() === name).map((r) => String(r.FILTER_RULE)).join(',');
      const filters = { doDb: rule('REPLICATE_DO_DB'), ignoreDb: rule('REPLICATE_IGNORE_DB'), doTable: rule('REPLICATE_DO_TABLE'), ignoreTable: rule('REPLICATE_IGNORE_TABLE'), wildDoTable: rule('REPLICATE_WILD_DO_TABLE'), wildIgnoreTable: rule('REPLICATE_WILD_IGNORE_TABLE') };
      for (const f of filtersDropping(filters, o.database, o.table)) problems.push(`a replication filter drops the storage table's rows: ${f}; the replica's binlog would never carry them`);
    } catch (err) {
      const gone = unreachable(err);
      if (gone) throw gone;
      warnings.push(`cannot read this replica's replication filters (performance_schema); make sure none drops \`${o.database}\`.\`${o.table}\``);
    }
  }
}

export function assertPreflight(result: PreflightResult): void {
  if (result.problems.length > 0) throw new PreflightError(result.problems);
}
