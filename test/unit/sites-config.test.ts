import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { selectSites, siteOfDatacenter, sitesOf } from '../../src/config/sites.js';
import { ConfigError } from '../../src/errors.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mcrepl-sites-test-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
function load(text: string, env: NodeJS.ProcessEnv = {}) {
  const file = path.join(root, `c${n++}.yaml`);
  fs.writeFileSync(file, text);
  return loadConfig({ file, env }).config;
}
function problems(text: string): string {
  try {
    load(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

const TWO = `
redis: { host: 10.0.0.1, password: s3cret, prefix: app }
mysql: { host: primary, serverId: 1000 }
datacenters:
  east: { servers: ["10.1.0.5:11211"] }
  west: { servers: ["10.2.0.5:11211"] }
sites:
  east: { redis: { host: 10.1.0.9 }, datacenters: [east] }
  west: { redis: { host: 10.2.0.9, port: 6380 }, source: { host: replica-west }, datacenters: [west] }
`;

test('each site gets its own Redis (the rest inherited), its data centers, its source and server id', () => {
  const config = load(TWO);
  const [east, west] = sitesOf(config);
  assert.deepEqual([east!.config.redis.host, east!.config.redis.port, east!.config.redis.password, east!.config.redis.prefix], ['10.1.0.9', 6379, 's3cret', 'app']);
  assert.deepEqual([west!.config.redis.host, west!.config.redis.port], ['10.2.0.9', 6380]);
  assert.deepEqual(Object.keys(east!.config.datacenters), ['east']);
  assert.deepEqual(Object.keys(west!.config.datacenters), ['west']);
  assert.deepEqual([east!.source.host, west!.source.host, west!.source.port], ['primary', 'replica-west', 3306]);
  assert.deepEqual([east!.source.serverId, west!.source.serverId], [1000, 1001]);
  assert.deepEqual([east!.sweepsRegistry, west!.sweepsRegistry], [true, false], 'only the first site sweeps the registry');
  assert.equal(siteOfDatacenter(config, 'west').name, 'west');
  assert.equal(east!.fallback, undefined, 'a site reading the primary has nothing to fall back to');
  assert.deepEqual([west!.fallback?.primary.host, west!.fallback?.primary.serverId, west!.fallback?.behindTransactions], ['primary', 1001, 10_000], "the primary with the site's server_id; the default bound");
});

test("a site's fallback to the primary: its bound, off with 0, and the primary's address as this site reaches it", () => {
  const [, west] = sitesOf(load(TWO.replace('source: { host: replica-west }', 'source: { host: replica-west, fallbackBehind: 500, primary: { host: primary.wan, port: 3307 } }')));
  assert.deepEqual([west!.fallback?.primary.host, west!.fallback?.primary.port, west!.fallback?.behindTransactions], ['primary.wan', 3307, 500]);
  const [, off] = sitesOf(load(TWO.replace('source: { host: replica-west }', 'source: { host: replica-west, fallbackBehind: 0 }')));
  assert.equal(off!.fallback?.behindTransactions, 0);
});

test('without sites: one site, the config as it is', () => {
  const config = load('datacenters:\n  east: { servers: ["10.0.0.5:11211"] }\n');
  const sites = sitesOf(config);
  assert.equal(sites.length, 1);
  assert.equal(sites[0]!.name, 'default');
  assert.equal(sites[0]!.config, config);
  assert.equal(selectSites(config, 'mcrepl tailer').length, 1);
});

test('a process serves --site; tailer without it is an error when there are several, run takes all', () => {
  const config = load(TWO);
  assert.throws(() => selectSites(config, 'mcrepl tailer'), /mcrepl tailer serves one site: name it with --site.*east, west/);
  assert.equal(selectSites(config, 'mcrepl run', true).length, 2);
  assert.deepEqual(selectSites({ ...config, site: 'west' }, 'mcrepl tailer').map((s) => s.name), ['west']);
  assert.match(problems(`${TWO}site: north\n`), /site: no site named 'north' \(known: east, west\)/);
});

test('every data center in exactly one site, known data centers only, no two sites on one Redis and prefix', () => {
  const msg = problems(`
datacenters:
  east: { servers: ["10.1.0.5:11211"] }
  west: { servers: ["10.2.0.5:11211"] }
  north: { servers: ["10.3.0.5:11211"] }
sites:
  a: { redis: { host: r1 }, datacenters: [east, south] }
  b: { redis: { host: r1 }, datacenters: [east] }
`);
  assert.match(msg, /no data center named 'south'/);
  assert.match(msg, /data center 'east' is in site 'a' already/);
  assert.match(msg, /data center 'north' is in no site/);
  assert.match(msg, /site 'a' uses the same Redis \(r1:6379, db 0\) and prefix 'mcrepl'/);
});
