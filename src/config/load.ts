/**
 * Loading: one file (YAML or JSON) plus environment overrides, validated at once. Every
 * problem is reported together, each naming the option (and where it came from) and the fix.
 *
 * Environment overrides: MCREPL_<SECTION>__<FIELD>, `__` between levels, field names in
 * SCREAMING_SNAKE_CASE, e.g. MCREPL_MYSQL__PASSWORD_FILE=/run/secrets/mysql,
 * MCREPL_DATACENTERS__EAST__SERVERS='["10.0.0.5:11211","10.0.0.6:11211"]', MCREPL_PARTITIONS=32.
 * A value that starts with `[` or `{` is read as JSON.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError } from '../errors.js';
import { configSchema, memcachedSchema, tailerSchema, workerSchema, type ResolvedConfig } from './schema.js';

const ENV_PREFIX = 'MCREPL_';
/** Sections that may carry password / passwordFile. */
const SECRET_SECTIONS = [['mysql'], ['mysql', 'tailer'], ['mysql', 'admin'], ['mysql', 'writer'], ['redis'], ['redis', 'sentinel'], ['memcached']];
/** Where TLS files may be named: the Redis servers', and the sentinels'. */
const TLS_SECTIONS = [['redis'], ['redis', 'sentinel']];

/** Environment variables that are not config paths: MCREPL_CONFIG, MCREPL_DEBUG, MCREPL_STACK_*, MCREPL_TEST_*. */
const NON_CONFIG_ENV = new Set(['MCREPL_CONFIG', 'MCREPL_DEBUG']);
const NON_CONFIG_PREFIXES = ['MCREPL_STACK_', 'MCREPL_TEST_'];

export interface LoadOptions {
  /** Config file; defaults to $MCREPL_CONFIG, then ./mcrepl.yaml if it exists. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Extra values applied last (used by the CLI for flags like --log-level). */
  overrides?: Record<string, unknown>;
}

export interface LoadedConfig {
  config: ResolvedConfig;
  /** The file read, if any. */
  file?: string;
}

type Tree = Record<string, unknown>;

const camel = (s: string) => s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function setPath(tree: Tree, keys: string[], value: unknown): void {
  let node = tree;
  for (const k of keys.slice(0, -1)) {
    const next = node[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[k] = {};
    node = node[k] as Tree;
  }
  node[keys[keys.length - 1]!] = value;
}

/** Maps MCREPL_A__B_C to ['a', 'bC']; data-center names (under `datacenters`) keep their spelling, lowercased. */
export function envPath(name: string): string[] {
  const parts = name.slice(ENV_PREFIX.length).split('__');
  return parts.map((p, i) => (i === 1 && parts[0] === 'DATACENTERS' ? p.toLowerCase() : camel(p)));
}

function envValue(raw: string): unknown {
  const t = raw.trim();
  if (t.startsWith('[') || t.startsWith('{')) {
    try {
      return JSON.parse(t);
    } catch {
      return raw;
    }
  }
  return raw;
}

/**
 * A site's `redis` options default to the top-level `redis`'s (a site usually names only its
 * host). A site that names its own host, port or sentinel does not inherit the other two.
 */
function inheritSiteRedis(tree: Tree): void {
  const sites = tree.sites;
  if (!sites || typeof sites !== 'object' || Array.isArray(sites)) return;
  const base = tree.redis && typeof tree.redis === 'object' && !Array.isArray(tree.redis) ? (tree.redis as Tree) : {};
  for (const site of Object.values(sites as Tree)) {
    if (!site || typeof site !== 'object' || Array.isArray(site)) continue;
    const own = (site as Tree).redis && typeof (site as Tree).redis === 'object' ? ((site as Tree).redis as Tree) : {};
    const inherited: Tree = { ...base };
    if ('host' in own || 'port' in own || 'sentinel' in own) {
      delete inherited.host;
      delete inherited.port;
      delete inherited.sentinel;
    }
    (site as Tree).redis = { ...inherited, ...own };
  }
}

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const problems: string[] = [];
  const origin = new Map<string, string>();

  let file = opts.file ?? env.MCREPL_CONFIG;
  if (!file && fs.existsSync('mcrepl.yaml')) file = 'mcrepl.yaml';
  let tree: Tree = {};
  if (file) {
    try {
      const text = fs.readFileSync(file, 'utf8');
      const parsed: unknown = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== 'object' || Array.isArray(parsed)) problems.push(`${file}: the top level must be a mapping`);
        else tree = parsed as Tree;
      }
    } catch (err) {
      problems.push(`${file}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || NON_CONFIG_ENV.has(name) || NON_CONFIG_PREFIXES.some((p) => name.startsWith(p)) || raw === undefined) continue;
    const keys = envPath(name);
    if (keys.some((k) => k === '')) {
      problems.push(`${name}: malformed name; use MCREPL_SECTION__FIELD`);
      continue;
    }
    setPath(tree, keys, envValue(raw));
    origin.set(keys.join('.'), `from ${name}`);
  }
  for (const [p, v] of Object.entries(opts.overrides ?? {})) {
    if (v === undefined) continue;
    setPath(tree, p.split('.'), v);
    origin.set(p, 'from the command line');
  }

  /** Where a value came from: the variable or flag that set it (or a parent of it), else the file. */
  const originOf = (p: string): string => {
    for (let q = p; q !== ''; q = q.includes('.') ? q.slice(0, q.lastIndexOf('.')) : '') {
      const o = origin.get(q);
      if (o) return o;
    }
    return file ? `in ${path.basename(file)}` : 'no config file given';
  };
  const raw = (keys: string[]): unknown => keys.reduce<unknown>((n, k) => (n && typeof n === 'object' ? (n as Tree)[k] : undefined), tree);

  inheritSiteRedis(tree);
  const parsed = configSchema.safeParse(tree);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const where = issue.path.join('.') || '(top level)';
      let src = originOf(issue.path.join('.'));
      let msg = issue.message;
      if (issue.code === 'unrecognized_keys') {
        msg = `unknown option(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}; check the spelling against config/mcrepl.example.yaml`;
        src = originOf([...issue.path, issue.keys[0]!].join('.'));
      }
      if (issue.code === 'invalid_type' && /undefined/.test(issue.message)) msg = 'is required';
      if (issue.code === 'invalid_key') msg = `invalid name: ${issue.issues.map((i) => i.message).join('; ')}`;
      problems.push(`${where}: ${msg} (${src})`);
    }
  }

  // Checks across fields run on what was written too, so they are reported together with any
  // schema mistake rather than one round later.
  // A relative path in the file is relative to the file; from the environment, to the cwd.
  const resolvePath = (p: string, at: string) => (file && !path.isAbsolute(p) && !origin.has(at) ? path.resolve(path.dirname(file), p) : p);
  const secrets = new Map<string, { password: string; passwordFile: string }>();
  // Each site's Redis (and its sentinels) may carry a password and TLS files too.
  const siteNames = tree.sites && typeof tree.sites === 'object' && !Array.isArray(tree.sites) ? Object.keys(tree.sites) : [];
  const siteRedis = siteNames.flatMap((n) => [['sites', n, 'redis'], ['sites', n, 'redis', 'sentinel']]);
  for (const section of [...SECRET_SECTIONS, ...siteRedis]) {
    const at = section.join('.');
    const password = raw([...section, 'password']);
    let passwordFile = raw([...section, 'passwordFile']);
    if (password !== undefined && passwordFile !== undefined) {
      problems.push(`${at}: both password and passwordFile are set; keep one (${originOf(`${at}.passwordFile`)})`);
    } else if (typeof passwordFile === 'string' && passwordFile !== '') {
      passwordFile = resolvePath(passwordFile, `${at}.passwordFile`);
      try {
        secrets.set(at, { passwordFile: passwordFile as string, password: fs.readFileSync(passwordFile as string, 'utf8').split('\n')[0]!.trim() });
      } catch (err) {
        problems.push(`${at}.passwordFile: cannot read ${String(passwordFile)}: ${(err as NodeJS.ErrnoException).code ?? String(err)} (${originOf(`${at}.passwordFile`)})`);
      }
    }
  }
  const tlsFiles = new Map<string, Map<string, string>>();
  for (const section of [...TLS_SECTIONS, ...siteRedis]) {
    const at = `${section.join('.')}.tls`;
    for (const f of ['caFile', 'certFile', 'keyFile']) {
      const v = raw([...section, 'tls', f]);
      if (typeof v !== 'string') continue;
      const p = resolvePath(v, `${at}.${f}`);
      if (!fs.existsSync(p)) problems.push(`${at}.${f}: cannot read ${p}: ENOENT (${originOf(`${at}.${f}`)})`);
      if (!tlsFiles.has(at)) tlsFiles.set(at, new Map());
      tlsFiles.get(at)!.set(f, p);
    }
  }
  const tailer = tailerSchema.safeParse(raw(['tailer']) ?? {});
  if (tailer.success && tailer.data.reconnectMaxMs < tailer.data.reconnectInitialMs) {
    problems.push(`tailer.reconnectMaxMs: must be at least tailer.reconnectInitialMs (${originOf('tailer.reconnectMaxMs')})`);
  }
  const worker = workerSchema.safeParse(raw(['worker']) ?? {});
  const memcached = memcachedSchema.safeParse(raw(['memcached']) ?? {});
  if (worker.success && memcached.success && worker.data.leaseTtlMs < 3 * memcached.data.timeoutMs) {
    // A worker group cut off from Redis stops writing before its lease can pass to another:
    // its last requests must have timed out by then.
    problems.push(`worker.leaseTtlMs: must be at least 3 × memcached.timeoutMs (${3 * memcached.data.timeoutMs}) (${originOf('worker.leaseTtlMs')})`);
  }

  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  const config = parsed.data;
  for (const [at, sec] of secrets) Object.assign(at.split('.').reduce<Tree>((n, k) => n[k] as Tree, config as unknown as Tree), sec);
  for (const [at, files] of tlsFiles) {
    const tls = at.split('.').reduce<unknown>((n, k) => (n && typeof n === 'object' ? (n as Tree)[k] : undefined), config);
    if (tls && typeof tls === 'object') Object.assign(tls, Object.fromEntries(files));
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { config, ...(file ? { file } : {}) };
}
