/**
 * Sites as the processes see them (docs/decisions/0023-sites.md): each site is a config of its
 * own, with the site's Redis as `redis` and only its data centers under `datacenters`, so a
 * tailer or worker group of one site runs exactly as the single-site pipeline did and never
 * touches another site's Redis. A config without `sites` is one site, `default`.
 */
import { ConfigError } from '../errors.js';
import type { MysqlConfig, ResolvedConfig } from './schema.js';

/** The name of the one site of a config without `sites`. */
export const DEFAULT_SITE = 'default';

export interface Site {
  name: string;
  /** The config of this site's processes: its Redis, its data centers. */
  config: ResolvedConfig;
  /** Where its tailer reads the binlog (`mysql` with the source's host and port). */
  source: MysqlConfig;
  /** Its active tailer removes expired keys from the registry. */
  sweepsRegistry: boolean;
  /**
   * A site whose `source` is another address than `mysql`'s: the primary (with the site's
   * server_id), read instead while the source is `behindTransactions` or more behind it (0:
   * never). Absent when the site reads `mysql`.
   */
  fallback?: { primary: MysqlConfig; behindTransactions: number };
}

/** Every site, in the order of the config. */
export function sitesOf(config: ResolvedConfig): Site[] {
  if (!config.sites) return [{ name: DEFAULT_SITE, config, source: config.mysql, sweepsRegistry: true }];
  return Object.entries(config.sites).map(([name, s], i) => {
    // Its own server_id too: two binlog readers with one id make the server drop the older one.
    const primary = { ...config.mysql, serverId: config.mysql.serverId + i };
    const source = s.source ? { ...primary, host: s.source.host, port: s.source.port } : primary;
    const elsewhere = source.host !== primary.host || source.port !== primary.port;
    return {
      name,
      config: {
        ...config,
        redis: s.redis,
        datacenters: Object.fromEntries(s.datacenters.map((dc) => [dc, config.datacenters[dc]!])),
        site: name,
      },
      source,
      sweepsRegistry: s.sweepRegistry ?? i === 0,
      ...(elsewhere && s.source ? { fallback: { primary: { ...primary, ...s.source.primary }, behindTransactions: s.source.fallbackBehind } } : {}),
    };
  });
}

/** The site a data center belongs to. */
export function siteOfDatacenter(config: ResolvedConfig, dc: string): Site {
  const site = sitesOf(config).find((s) => s.config.datacenters[dc] !== undefined);
  if (!site) throw new ConfigError([`no data center named '${dc}' in the config (known: ${Object.keys(config.datacenters).join(', ')})`]);
  return site;
}

/**
 * The site this process serves: the one named by `site` (or `--site`), else the only one. With
 * several and none named, `all` allows every site (`run`), otherwise it is an error.
 */
export function selectSites(config: ResolvedConfig, what: string, all = false): Site[] {
  const sites = sitesOf(config);
  if (config.site !== undefined) return sites.filter((s) => s.name === config.site);
  if (sites.length === 1 || all) return sites;
  throw new ConfigError([`${what} serves one site: name it with --site (or 'site:'); known sites: ${sites.map((s) => s.name).join(', ')}`]);
}
