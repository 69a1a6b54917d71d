/**
 * A ketama data center whose servers are the addresses a DNS name resolves to (`discover`): the
 * pool of the Copper walkthrough, grown or shrunk by changing its records. The name is looked
 * up (A and AAAA) at start and every `refreshS`; a different set of addresses is a change of
 * servers (membership.ts). A lookup that fails, or finds no address, changes nothing: a DNS
 * outage must not empty the data center.
 */
import { Resolver } from 'node:dns/promises';
import type { DatacenterConfig } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../observability/logger.js';

type KetamaDatacenter = Extract<DatacenterConfig, { routing: 'ketama' }>;
export type Discover = NonNullable<KetamaDatacenter['discover']>;

/** `host:port` (IPv6 in brackets) of the servers the name resolves to, sorted. */
export async function resolvePool(d: Discover): Promise<string[]> {
  const resolver = new Resolver({ timeout: 2_000, tries: 2 });
  if (d.resolver) resolver.setServers([d.resolver]);
  // No record of a family is an empty answer; a lookup that fails for one family (a server that
  // refuses AAAA queries, say) counts only if the other fails too.
  const none = (err: unknown) => {
    const code = (err as { code?: string }).code;
    if (code === 'ENODATA' || code === 'ENOTFOUND') return [] as string[];
    throw err;
  };
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(d.dns).catch(none), resolver.resolve6(d.dns).catch(none)]);
  if (v4.status === 'rejected' && v6.status === 'rejected') throw v4.reason;
  const got = (r: PromiseSettledResult<string[]>) => (r.status === 'fulfilled' ? r.value : []);
  return [...got(v4).map((a) => `${a}:${d.port}`), ...got(v6).map((a) => `[${a}]:${d.port}`)].sort();
}

/** The data center with the servers found (`host:port:weight`). */
export function withServers(dc: KetamaDatacenter, addresses: string[]): KetamaDatacenter {
  return { ...dc, servers: addresses.map((a) => `${a}:${dc.discover?.weight ?? 1}`) };
}

export class DnsPool {
  private timer: NodeJS.Timeout | undefined;
  private last: string[] = [];

  constructor(
    private readonly dc: KetamaDatacenter,
    private readonly logger: Logger,
    private readonly onChange: (dc: KetamaDatacenter) => void,
  ) {}

  /** The servers found now; undefined if the lookup failed or found none. */
  async lookup(): Promise<KetamaDatacenter | undefined> {
    const d = this.dc.discover!;
    try {
      const found = await resolvePool(d);
      if (found.length === 0) {
        this.logger.warn({ name: d.dns }, 'the DNS name of the data center’s servers resolves to no address: keeping the servers in use');
        return undefined;
      }
      return withServers(this.dc, found);
    } catch (err) {
      this.logger.warn({ name: d.dns, err: errorMessage(err) }, 'could not look up the data center’s servers in DNS: keeping the servers in use');
      return undefined;
    }
  }

  /** Looks the name up every `refreshS` from now, reporting a different set of servers. */
  start(current: string[]): void {
    this.last = [...current].sort();
    const tick = async () => {
      const next = await this.lookup();
      if (next && JSON.stringify([...next.servers].sort()) !== JSON.stringify(this.last)) {
        this.logger.info({ name: this.dc.discover!.dns, was: this.last, now: next.servers }, 'the data center’s servers changed in DNS');
        this.last = [...next.servers].sort();
        this.onChange(next);
      }
      this.timer = setTimeout(() => void tick(), this.dc.discover!.refreshS * 1000);
      this.timer.unref();
    };
    this.timer = setTimeout(() => void tick(), this.dc.discover!.refreshS * 1000);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
