import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { envPath, loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mcrepl-load-test-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A fresh directory holding `mcrepl.yaml` (or `name`) with `text`; returns the file's path. */
function writeConfig(text: string, name = 'mcrepl.yaml'): string {
  const dir = path.join(root, `c${n++}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

const MINIMAL = `
datacenters:
  east:
    servers: ["10.0.0.5:11211"]
`;

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

describe('envPath', () => {
  test('maps names to camelCase paths, keeping data-center names', () => {
    assert.deepEqual(envPath('MCREPL_MYSQL__PORT'), ['mysql', 'port']);
    assert.deepEqual(envPath('MCREPL_MYSQL__PASSWORD_FILE'), ['mysql', 'passwordFile']);
    assert.deepEqual(envPath('MCREPL_PARTITIONS'), ['partitions']);
    assert.deepEqual(envPath('MCREPL_DEAD_LETTERS__MAX_ENTRIES'), ['deadLetters', 'maxEntries']);
    assert.deepEqual(envPath('MCREPL_DATACENTERS__EAST__SERVERS'), ['datacenters', 'east', 'servers']);
    assert.deepEqual(envPath('MCREPL_DATACENTERS__US_EAST_1__SERVERS'), ['datacenters', 'us_east_1', 'servers']);
  });
});

describe('loadConfig: reading a file', () => {
  test('the shipped example configs are valid', () => {
    const dir = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'config');
    const files = fs.readdirSync(dir).filter((n) => n.endsWith('.yaml'));
    assert.ok(files.includes('mcrepl.example.yaml'));
    for (const f of files) {
      try {
        loadConfig({ file: path.join(dir, f), env: {} });
      } catch (err) {
        // The secrets they point at exist only where they are deployed (a container, the local stack).
        const problems = err instanceof ConfigError ? err.problems.filter((p) => !/passwordFile: cannot read /.test(p)) : [String(err)];
        assert.deepEqual(problems, [], `config/${f}`);
      }
    }
  });

  test('a minimal YAML file gets every default', () => {
    const file = writeConfig(MINIMAL);
    const { config, file: used } = loadConfig({ file, env: {} });
    assert.equal(used, file);
    assert.deepEqual(config.datacenters, { east: { routing: 'replicate', servers: ['10.0.0.5:11211'] } });
    assert.equal(config.mysql.host, '127.0.0.1');
    assert.equal(config.mysql.port, 3306);
    assert.equal(config.mysql.user, 'mcrepl');
    assert.equal(config.mysql.database, 'memcached');
    assert.equal(config.mysql.password, undefined);
    assert.equal(config.redis.port, 6379);
    assert.equal(config.redis.prefix, 'mcrepl');
    assert.equal(config.redis.tls, false);
    assert.equal(config.partitions, 1);
    assert.equal(config.memcached.maxItemBytes, 1_048_576);
    assert.equal(config.tailer.batchMaxOps, 5_000);
    assert.equal(config.worker.probeIntervalMs, 500);
    assert.equal(config.worker.missedOpsMaxKeys, 100_000);
    assert.equal(config.deadLetters.maxEntries, 10_000);
    assert.equal(config.log.level, 'info');
  });

  test('values from the file are used', () => {
    const file = writeConfig(`
mysql:
  host: db.internal
  port: 3307
  user: repl
  database: cache_db
redis:
  port: 6380
  tls: true
  prefix: mc-prod
partitions: 32
memcached:
  maxItemBytes: 2097152
log:
  level: debug
datacenters:
  east:
    routing: replicate
    servers: [10.0.0.5:11211, 10.0.0.6:11211]
  west:
    servers: [10.1.0.5:11211]
`);
    const { config } = loadConfig({ file, env: {} });
    assert.equal(config.mysql.host, 'db.internal');
    assert.equal(config.mysql.port, 3307);
    assert.equal(config.mysql.user, 'repl');
    assert.equal(config.mysql.database, 'cache_db');
    assert.equal(config.redis.port, 6380);
    assert.equal(config.redis.tls, true);
    assert.equal(config.redis.prefix, 'mc-prod');
    assert.equal(config.partitions, 32);
    assert.equal(config.memcached.maxItemBytes, 2_097_152);
    assert.equal(config.log.level, 'debug');
    assert.deepEqual(config.datacenters.east!.servers, ['10.0.0.5:11211', '10.0.0.6:11211']);
    assert.deepEqual(config.datacenters.west, { routing: 'replicate', servers: ['10.1.0.5:11211'] });
  });

  test('a JSON file is read as JSON', () => {
    const file = writeConfig(JSON.stringify({ partitions: 4, datacenters: { dc1: { servers: ['m1:11211'] } } }), 'mcrepl.json');
    const { config } = loadConfig({ file, env: {} });
    assert.equal(config.partitions, 4);
    assert.deepEqual(config.datacenters.dc1!.servers, ['m1:11211']);
  });

  test('the file can come from MCREPL_CONFIG, which is not itself an option', () => {
    const file = writeConfig(`${MINIMAL}partitions: 8\n`);
    const { config, file: used } = loadConfig({ env: { MCREPL_CONFIG: file, MCREPL_STACK_DIR: '/x', MCREPL_STACK_PORT_BASE: '1', MCREPL_STACK_WHATEVER: 'y' } });
    assert.equal(used, file);
    assert.equal(config.partitions, 8);
  });

  test('the env option is used instead of process.env', () => {
    const file = writeConfig(MINIMAL);
    const before = process.env.MCREPL_PARTITIONS;
    process.env.MCREPL_PARTITIONS = '99999';
    try {
      assert.equal(loadConfig({ file, env: {} }).config.partitions, 1);
    } finally {
      if (before === undefined) delete process.env.MCREPL_PARTITIONS;
      else process.env.MCREPL_PARTITIONS = before;
    }
  });

  test('an unreadable file, a YAML syntax error and a non-mapping top level are reported', () => {
    const missing = path.join(root, 'nope', 'mcrepl.yaml');
    const e1 = configError(() => loadConfig({ file: missing, env: {} }));
    assert.match(e1.problems[0]!, new RegExp(`^${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ENOENT`));

    const bad = writeConfig('datacenters: [\n');
    const e2 = configError(() => loadConfig({ file: bad, env: {} }));
    assert.ok(e2.problems[0]!.startsWith(`${bad}: `), e2.problems[0]);

    const list = writeConfig('- a\n- b\n');
    const e3 = configError(() => loadConfig({ file: list, env: {} }));
    assert.equal(e3.problems[0], `${list}: the top level must be a mapping`);
  });

  test('a missing required section names it and where the config came from', () => {
    const file = writeConfig('partitions: 4\n');
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, ['datacenters: is required (in mcrepl.yaml)']);

    const cwd = process.cwd();
    const empty = path.join(root, `empty${n++}`);
    fs.mkdirSync(empty);
    process.chdir(empty);
    try {
      const e2 = configError(() => loadConfig({ env: {} }));
      assert.deepEqual(e2.problems, ['datacenters: is required (no config file given)']);
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('loadConfig: environment overrides', () => {
  test('MCREPL_MYSQL__PORT overrides the file and is coerced to a number', () => {
    const file = writeConfig(`${MINIMAL}mysql:\n  port: 3306\n`);
    assert.equal(loadConfig({ file, env: { MCREPL_MYSQL__PORT: '3307' } }).config.mysql.port, 3307);
  });

  test('scalar overrides of several sections', () => {
    const file = writeConfig(MINIMAL);
    const { config } = loadConfig({
      file,
      env: { MCREPL_PARTITIONS: '32', MCREPL_REDIS__TLS: 'true', MCREPL_LOG__LEVEL: 'warn', MCREPL_DEAD_LETTERS__MAX_ENTRIES: '5', MCREPL_MYSQL__HOST: 'db' },
    });
    assert.equal(config.partitions, 32);
    assert.equal(config.redis.tls, true);
    assert.equal(config.log.level, 'warn');
    assert.equal(config.deadLetters.maxEntries, 5);
    assert.equal(config.mysql.host, 'db');
  });

  test('MCREPL_DATACENTERS__EAST__SERVERS as JSON replaces the servers; a new DC can be added', () => {
    const file = writeConfig(MINIMAL);
    const { config } = loadConfig({
      file,
      env: {
        MCREPL_DATACENTERS__EAST__SERVERS: '["10.0.0.7:11211","10.0.0.8:11211"]',
        MCREPL_DATACENTERS__US_WEST__SERVERS: ' ["10.9.0.1:11211"] ',
      },
    });
    assert.deepEqual(config.datacenters.east, { routing: 'replicate', servers: ['10.0.0.7:11211', '10.0.0.8:11211'] });
    assert.deepEqual(config.datacenters.us_west, { routing: 'replicate', servers: ['10.9.0.1:11211'] });
  });

  test('the whole datacenters map from the environment, with no file', () => {
    const { config, file } = loadConfig({ file: undefined, env: { MCREPL_CONFIG: '', MCREPL_DATACENTERS: '{"a":{"servers":["h:1"]}}' } });
    assert.equal(file, undefined);
    assert.deepEqual(config.datacenters, { a: { routing: 'replicate', servers: ['h:1'] } });
  });

  test('MCREPL_MYSQL__PASSWORD_FILE (absolute) is read: first line, trimmed', () => {
    const file = writeConfig(MINIMAL);
    const secret = path.join(path.dirname(file), 'mysql-secret');
    fs.writeFileSync(secret, '  s3cr3t pw  \nsecond line\n');
    const { config } = loadConfig({ file, env: { MCREPL_MYSQL__PASSWORD_FILE: secret } });
    assert.equal(config.mysql.password, 's3cr3t pw');
    assert.equal(config.mysql.passwordFile, secret);
  });

  test('a relative MCREPL_MYSQL__PASSWORD_FILE is relative to the working directory, not the config file', () => {
    const file = writeConfig(MINIMAL);
    const secretDir = path.join(root, `secrets${n++}`);
    fs.mkdirSync(secretDir);
    fs.writeFileSync(path.join(secretDir, 'pw'), 'from-cwd\n');
    const rel = path.relative(process.cwd(), path.join(secretDir, 'pw'));
    assert.ok(!path.isAbsolute(rel));
    const { config } = loadConfig({ file, env: { MCREPL_MYSQL__PASSWORD_FILE: rel } });
    assert.equal(config.mysql.password, 'from-cwd');
    assert.equal(config.mysql.passwordFile, rel);
  });

  test('a malformed variable name is reported', () => {
    const file = writeConfig(MINIMAL);
    const e = configError(() => loadConfig({ file, env: { MCREPL_MYSQL__: 'x', MCREPL___PORT: '1' } }));
    assert.deepEqual(e.problems, ['MCREPL_MYSQL__: malformed name; use MCREPL_SECTION__FIELD', 'MCREPL___PORT: malformed name; use MCREPL_SECTION__FIELD']);
  });

  test('variables without the MCREPL_ prefix are ignored', () => {
    const file = writeConfig(MINIMAL);
    assert.equal(loadConfig({ file, env: { PARTITIONS: 'nonsense', MYSQL__PORT: 'x', HOME: '/root' } }).config.partitions, 1);
  });

  test('overrides (command line) are applied last and named as such', () => {
    const file = writeConfig(`${MINIMAL}log:\n  level: info\n`);
    const { config } = loadConfig({ file, env: { MCREPL_LOG__LEVEL: 'warn' }, overrides: { 'log.level': 'debug', 'mysql.port': undefined } });
    assert.equal(config.log.level, 'debug');
    assert.equal(config.mysql.port, 3306);
    const e = configError(() => loadConfig({ file, env: {}, overrides: { 'log.level': 'chatty' } }));
    assert.equal(e.problems.length, 1);
    assert.match(e.problems[0]!, /^log\.level: .* \(from the command line\)$/);
  });
});

describe('loadConfig: secrets from files', () => {
  test('a relative passwordFile in the config file is relative to that file', () => {
    const file = writeConfig(`${MINIMAL}mysql:\n  passwordFile: secrets/mysql\nredis:\n  passwordFile: ./redis-pw\n`);
    const dir = path.dirname(file);
    fs.mkdirSync(path.join(dir, 'secrets'));
    fs.writeFileSync(path.join(dir, 'secrets', 'mysql'), 'mysql-pw\r\n');
    fs.writeFileSync(path.join(dir, 'redis-pw'), 'redis-pw');
    const { config } = loadConfig({ file, env: {} });
    assert.equal(config.mysql.passwordFile, path.join(dir, 'secrets', 'mysql'));
    assert.equal(config.mysql.password, 'mysql-pw');
    assert.equal(config.redis.passwordFile, path.join(dir, 'redis-pw'));
    assert.equal(config.redis.password, 'redis-pw');
  });

  test('an unreadable passwordFile is reported with its resolved path', () => {
    const file = writeConfig(`${MINIMAL}mysql:\n  passwordFile: missing-secret\n`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, [`mysql.passwordFile: cannot read ${path.join(path.dirname(file), 'missing-secret')}: ENOENT (in mcrepl.yaml)`]);
  });

  test('password and passwordFile together are refused, whatever their origin', () => {
    const file = writeConfig(`${MINIMAL}mysql:\n  password: inline\n  passwordFile: /dev/null\n`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, ['mysql: both password and passwordFile are set; keep one (in mcrepl.yaml)']);

    const file2 = writeConfig(`${MINIMAL}redis:\n  password: inline\n`);
    const e2 = configError(() => loadConfig({ file: file2, env: { MCREPL_REDIS__PASSWORD_FILE: '/dev/null' } }));
    assert.deepEqual(e2.problems, ['redis: both password and passwordFile are set; keep one (from MCREPL_REDIS__PASSWORD_FILE)']);
  });

  test('an inline password is kept as is', () => {
    const file = writeConfig(`${MINIMAL}redis:\n  password: "p w"\n`);
    assert.equal(loadConfig({ file, env: {} }).config.redis.password, 'p w');
  });
});

describe('loadConfig: mistakes', () => {
  test('several mistakes are reported at once, each naming the option and its origin', () => {
    const file = writeConfig(`
mysql:
  port: 70000
partitions: 0
log:
  level: loud
redis:
  prefix: "bad prefix!"
datacenters:
  east:
    servers: []
  west: {}
  north:
    servers: ["no-port"]
`);
    const e = configError(() => loadConfig({ file, env: { MCREPL_REDIS__PORT: 'abc' } }));
    assert.equal(e.code, 'CONFIG_INVALID');
    assert.equal(e.problems.length, 8, e.problems.join('\n'));
    const expect: [string, string][] = [
      ['mysql.port', '(in mcrepl.yaml)'],
      ['redis.port', '(from MCREPL_REDIS__PORT)'],
      ['redis.prefix', '(in mcrepl.yaml)'],
      ['partitions', '(in mcrepl.yaml)'],
      ['log.level', '(in mcrepl.yaml)'],
      ['datacenters.east.servers', '(in mcrepl.yaml)'],
      ['datacenters.west.servers', '(in mcrepl.yaml)'],
      ['datacenters.north.servers.0', '(in mcrepl.yaml)'],
    ];
    for (const [option, origin] of expect) {
      const p = e.problems.find((x) => x.startsWith(`${option}: `));
      assert.ok(p, `no problem for ${option} in:\n${e.problems.join('\n')}`);
      assert.ok(p.endsWith(origin), `${p} should end with ${origin}`);
    }
    assert.ok(e.problems.includes('datacenters.east.servers: a data center needs at least one memcached server (in mcrepl.yaml)'));
    assert.ok(e.problems.includes('datacenters.west.servers: a data center needs at least one memcached server (in mcrepl.yaml)'));
    assert.ok(e.problems.includes('datacenters.north.servers.0: expected host:port, e.g. 10.0.0.5:11211 (in mcrepl.yaml)'));
    assert.ok(e.problems.includes('redis.prefix: expected 1-64 characters of A-Z, a-z, 0-9, _ . - (in mcrepl.yaml)'));
    // The message lists every problem.
    for (const p of e.problems) assert.ok(e.message.includes(`  - ${p}`));
  });

  test('unknown top-level keys are rejected', () => {
    const file = writeConfig(`${MINIMAL}colour: red\npartitons: 4\n`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, ["(top level): unknown option(s) 'colour', 'partitons'; check the spelling against config/mcrepl.example.yaml (in mcrepl.yaml)"]);
  });

  test('unknown keys inside a section are rejected', () => {
    const file = writeConfig(`${MINIMAL}mysql:\n  hots: db.internal\n`);
    const e = configError(() => loadConfig({ file, env: { MCREPL_TAILER__BATCH_MAX_OPPS: '10' } }));
    assert.equal(e.problems.length, 2, e.problems.join('\n'));
    assert.ok(e.problems.some((p) => p.includes("'hots'")));
    assert.ok(e.problems.some((p) => p.includes("'batchMaxOpps'")));
  });

  test('duplicate servers in a data center are refused', () => {
    const file = writeConfig(`
datacenters:
  east:
    servers: ["10.0.0.5:11211", "10.0.0.6:11211", "10.0.0.5:11211"]
  west:
    servers: ["10.0.0.5:11211"]
`);
    const e = configError(() => loadConfig({ file, env: {} }));
    // The same server in two different data centers is fine; twice in one is not.
    assert.deepEqual(e.problems, ['datacenters.east.servers: 10.0.0.5:11211 is listed twice (in mcrepl.yaml)']);
  });

  test('a backoff maximum below its initial value, and a worker lease shorter than 3 memcached timeouts, are refused together', () => {
    const file = writeConfig(`${MINIMAL}tailer:\n  reconnectInitialMs: 500\n  reconnectMaxMs: 100\nworker:\n  leaseTtlMs: 1000\n`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, ['tailer.reconnectMaxMs: must be at least tailer.reconnectInitialMs (in mcrepl.yaml)', 'worker.leaseTtlMs: must be at least 3 × memcached.timeoutMs (6000) (in mcrepl.yaml)']);
  });

  test('secret, duplicate-server and range problems are reported together', () => {
    const file = writeConfig(`
mysql:
  password: a
  passwordFile: /dev/null
tailer:
  reconnectInitialMs: 500
  reconnectMaxMs: 100
datacenters:
  east:
    servers: ["h:1", "h:1"]
`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, [
      'datacenters.east.servers: h:1 is listed twice (in mcrepl.yaml)',
      'mysql: both password and passwordFile are set; keep one (in mcrepl.yaml)',
      'tailer.reconnectMaxMs: must be at least tailer.reconnectInitialMs (in mcrepl.yaml)',
    ]);
  });

  test('schema mistakes and cross-field mistakes are reported in one ConfigError', () => {
    const file = writeConfig(`
mysql:
  port: 0
datacenters:
  east:
    servers: ["h:1", "h:1"]
`);
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.equal(e.problems.length, 2, e.problems.join('\n'));
    assert.ok(e.problems.some((p) => p.startsWith('mysql.port: ')));
    assert.ok(e.problems.includes('datacenters.east.servers: h:1 is listed twice (in mcrepl.yaml)'));
  });

  test('problems inside a value set from the environment name that variable', () => {
    const file = writeConfig(MINIMAL);
    const e = configError(() => loadConfig({ file, env: { MCREPL_DATACENTERS__EAST__SERVERS: '["no-port"]', MCREPL_PARTITONS: '4' } }));
    assert.equal(e.problems.length, 2, e.problems.join('\n'));
    assert.ok(e.problems.some((p) => p.startsWith('datacenters.east.servers.0: ') && p.endsWith('(from MCREPL_DATACENTERS__EAST__SERVERS)')), e.problems.join('\n'));
    assert.ok(e.problems.some((p) => p.includes("'partitons'") && p.includes('MCREPL_PARTITONS')), e.problems.join('\n'));
  });

  test('an invalid data-center name is reported with the naming rule', () => {
    const file = writeConfig('datacenters:\n  East:\n    servers: ["h:1"]\n');
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.equal(e.problems.length, 1);
    assert.match(e.problems[0]!, /^datacenters\.East: .*data-center names are 1-32 characters/);
  });

  test('an invalid data-center name is refused', () => {
    const file = writeConfig('datacenters:\n  East:\n    servers: ["h:1"]\n  ok-dc:\n    servers: ["h:1"]\n');
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.equal(e.problems.length, 1, e.problems.join('\n'));
    assert.ok(e.problems[0]!.startsWith('datacenters.East: '), e.problems[0]);
    assert.ok(e.problems[0]!.endsWith('(in mcrepl.yaml)'));
  });

  test('an empty datacenters map is refused', () => {
    const file = writeConfig('datacenters: {}\n');
    const e = configError(() => loadConfig({ file, env: {} }));
    assert.deepEqual(e.problems, ['datacenters: at least one data center is required (in mcrepl.yaml)']);
  });
});

describe('memcached.writer', () => {
  test('auto picks meta, or memjs when a SASL username is set; meta with a username is refused with the reason', async () => {
    const { resolveWriterKind } = await import('../../src/sink/writer-factory.js');
    const plain = loadConfig({ file: writeConfig(MINIMAL), env: {} }).config;
    assert.equal(plain.memcached.writer, 'auto');
    assert.equal(resolveWriterKind(plain.memcached.writer, plain.memcached.username), 'meta');
    const sasl = loadConfig({ file: writeConfig(`${MINIMAL}memcached:\n  username: app\n  password: pw\n`), env: {} }).config;
    assert.equal(resolveWriterKind(sasl.memcached.writer, sasl.memcached.username), 'memjs');
    const forced = loadConfig({ file: writeConfig(`${MINIMAL}memcached:\n  writer: memjs\n`), env: {} }).config;
    assert.equal(resolveWriterKind(forced.memcached.writer, forced.memcached.username), 'memjs');
    const err = configError(() => loadConfig({ file: writeConfig(`${MINIMAL}memcached:\n  writer: meta\n  username: app\n  password: pw\n`), env: {} }));
    assert.match(err.message, /memcached\.writer.*text protocol off under SASL/s);
  });
});

describe('redis.sentinel', () => {
  const SENTINEL = `${MINIMAL}redis:
  passwordFile: redis-pw
  sentinel:
    name: mcrepl
    nodes: [10.0.0.1:26379, "sentinel-2:26380"]
    passwordFile: sentinel-pw
`;

  test('is read from the file with its own password (a file next to it), and becomes ioredis sentinel options; secrets are redacted', async () => {
    const file = writeConfig(SENTINEL);
    fs.writeFileSync(path.join(path.dirname(file), 'redis-pw'), 'data-secret\n');
    fs.writeFileSync(path.join(path.dirname(file), 'sentinel-pw'), 'sentinel-secret\n');
    const { config } = loadConfig({ file, env: {} });
    assert.equal(config.redis.sentinel?.name, 'mcrepl');
    assert.equal(config.redis.sentinel?.password, 'sentinel-secret');
    assert.equal(config.redis.password, 'data-secret');
    const { redisOptions, describeRedis } = await import('../../src/coordination/redis.js');
    const o = redisOptions(config.redis);
    assert.deepEqual(o.sentinels, [{ host: '10.0.0.1', port: 26379 }, { host: 'sentinel-2', port: 26380 }]);
    assert.equal(o.name, 'mcrepl');
    assert.equal(o.role, 'master');
    assert.equal(o.sentinelPassword, 'sentinel-secret');
    assert.equal(o.password, 'data-secret');
    assert.equal(o.tls, undefined);
    assert.equal(o.sentinelTLS, undefined);
    assert.match(describeRedis(config.redis), /the primary of 'mcrepl' through the sentinels 10\.0\.0\.1:26379, sentinel-2:26380/);
    const { redactSecrets } = await import('../../src/observability/logger.js');
    const shown = JSON.stringify(redactSecrets(config));
    assert.ok(!shown.includes('sentinel-secret') && !shown.includes('data-secret'), shown);
  });

  test('every field can come from the environment', () => {
    const dir = path.dirname(writeConfig(MINIMAL));
    const pw = path.join(dir, 'spw');
    fs.writeFileSync(pw, 's3cret\n');
    const { config } = loadConfig({
      file: path.join(dir, 'mcrepl.yaml'),
      env: { MCREPL_REDIS__SENTINEL__NAME: 'cache', MCREPL_REDIS__SENTINEL__NODES: '["10.1.0.1:26379","10.1.0.2:26379"]', MCREPL_REDIS__SENTINEL__PASSWORD_FILE: pw, MCREPL_REDIS__SENTINEL__TLS: 'true' },
    });
    assert.deepEqual(config.redis.sentinel?.nodes, ['10.1.0.1:26379', '10.1.0.2:26379']);
    assert.equal(config.redis.sentinel?.name, 'cache');
    assert.equal(config.redis.sentinel?.password, 's3cret');
    assert.equal(config.redis.sentinel?.tls, true);
  });

  test('TLS: redis.tls covers the servers found through the sentinels, sentinel.tls the sentinels; their files are checked', async () => {
    const file = writeConfig(`${MINIMAL}redis:\n  tls: true\n  sentinel:\n    name: m\n    nodes: ["h:26379"]\n    tls: { caFile: ca.pem, rejectUnauthorized: false }\n`);
    fs.writeFileSync(path.join(path.dirname(file), 'ca.pem'), 'not really a CA');
    const { config } = loadConfig({ file, env: {} });
    const { redisOptions } = await import('../../src/coordination/redis.js');
    const o = redisOptions(config.redis);
    assert.deepEqual(o.tls, {});
    assert.equal(o.enableTLSForSentinelMode, true);
    assert.equal(String(o.sentinelTLS?.ca), 'not really a CA');
    assert.equal(o.sentinelTLS?.rejectUnauthorized, false);
    const missing = configError(() => loadConfig({ file: writeConfig(`${MINIMAL}redis:\n  sentinel:\n    name: m\n    nodes: ["h:26379"]\n    tls: { caFile: nope.pem }\n`), env: {} }));
    assert.match(missing.problems.join('\n'), /^redis\.sentinel\.tls\.caFile: cannot read .*nope\.pem: ENOENT \(in mcrepl\.yaml\)$/m);
  });

  test('mistakes are reported together, each with the option and the fix', () => {
    const file = writeConfig(`${MINIMAL}redis:\n  sentinel:\n    nodes: ["10.0.0.1", "h:26379"]\n    master: mymaster\n    password: a\n    passwordFile: b\n`);
    const e = configError(() => loadConfig({ file, env: {} }));
    const all = e.problems.join('\n');
    assert.match(all, /^redis\.sentinel\.name: is required \(in mcrepl\.yaml\)$/m);
    assert.match(all, /^redis\.sentinel\.nodes\.0: expected host:port, e\.g\. 10\.0\.0\.5:26379 \(in mcrepl\.yaml\)$/m);
    assert.match(all, /^redis\.sentinel: unknown option\(s\) 'master'; check the spelling/m);
    assert.match(all, /^redis\.sentinel: both password and passwordFile are set; keep one/m);
    const empty = configError(() => loadConfig({ file: writeConfig(`${MINIMAL}redis:\n  sentinel: { name: m, nodes: [] }\n`), env: {} }));
    assert.match(empty.problems.join('\n'), /^redis\.sentinel\.nodes: list at least one sentinel/m);
    const fromEnv = configError(() => loadConfig({ file: writeConfig(MINIMAL), env: { MCREPL_REDIS__SENTINEL__NODES: '["h:26379"]' } }));
    assert.equal(fromEnv.problems.length, 1);
    assert.match(fromEnv.problems[0]!, /^redis\.sentinel\.name: is required /);
  });
});
