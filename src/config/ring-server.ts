/**
 * A memcached server as a ketama data center lists it, in twemproxy's syntax:
 * `host:port[:weight] [name]` (weight 1 when left out; the name, when given, is what the
 * server's ring points are hashed from instead of its address).
 */
export interface RingServer {
  /** `host:port`, where the server is reached. */
  address: string;
  weight: number;
  /** The name its points are hashed from (twemproxy's optional name after the weight). */
  name?: string;
}

/** Parses `host:port[:weight] [name]`; throws an error naming what is wrong. */
export function parseRingServer(spec: string): RingServer {
  const m = /^(\S+?):(\d{1,5})(?::(\d+))?(?:\s+(\S+))?$/.exec(spec.trim());
  if (!m) throw new Error(`'${spec}' is not host:port[:weight] [name]`);
  const weight = m[3] === undefined ? 1 : Number(m[3]);
  if (!(weight > 0)) throw new Error(`'${spec}': the weight must be 1 or more`);
  return { address: `${m[1]}:${m[2]}`, weight, ...(m[4] !== undefined ? { name: m[4] } : {}) };
}
