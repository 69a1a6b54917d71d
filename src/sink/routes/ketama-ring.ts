/**
 * A ketama ring that places each key where twemproxy (nutcracker, `distribution: ketama`) and
 * libmemcached's KETAMA_WEIGHTED (pylibmc `ketama_weighted`, PHP memcached with
 * OPT_LIBKETAMA_COMPATIBLE) look for it. Read from their source (twemproxy
 * src/hashkit/nc_ketama.c, nc_fnv.c, nc_md5.c, nc_conf.c), not guessed:
 *
 * - Each server gets `floor(pct × 160 / 4 × servers + 1e-10) × 4` points, in C `float`
 *   arithmetic, where pct is its weight over the total: 160 at equal weights.
 * - Its points are md5(`<name>-<i>`) for i = 0, 1, ..., each digest cut into four little-endian
 *   32-bit values. The name is the one given after the weight (`host:port:weight name`), else
 *   `host:port`, or only `host` when the port is 11211 (libmemcached's rule, kept by twemproxy).
 * - A key's hash is md5 (its first four bytes, little-endian) or twemproxy's fnv1a_64, which is
 *   FNV-1a on 32 bits with the 64-bit constants truncated, and each byte read as a signed
 *   `char`: a byte of 0x80 or more is XORed in as 0xFFFFFFxx.
 * - The key goes to the first point at or after its hash, wrapping around.
 *
 * `owners(key, n)` walks on from there to the next distinct servers: a key's replicas.
 */
import { createHash } from 'node:crypto';
import type { RingServer } from '../../config/ring-server.js';

export type { RingServer } from '../../config/ring-server.js';

export type KetamaHash = 'md5' | 'fnv1a_64';

const POINTS_PER_SERVER = 160;
const DEFAULT_PORT = 11211;

/** The name a server's points are hashed from. */
export function pointName(s: RingServer): string {
  if (s.name !== undefined) return s.name;
  const i = s.address.lastIndexOf(':');
  const port = Number(s.address.slice(i + 1));
  return port === DEFAULT_PORT ? s.address.slice(0, i) : s.address;
}

function md5(data: Buffer | string): Buffer {
  return createHash('md5').update(data).digest();
}

/** The key's position on the ring. */
export function keyHash(key: Buffer, hash: KetamaHash): number {
  if (hash === 'md5') return md5(key).readUInt32LE(0);
  let h = 0x84222325;
  for (const byte of key) {
    // (uint32_t) of a signed char: sign-extended.
    h ^= byte >= 0x80 ? (byte | 0xffffff00) >>> 0 : byte;
    h = Math.imul(h, 0x1b3) >>> 0;
  }
  return h >>> 0;
}

/** Points per server, computed as the C code does in `float`. */
function pointsFor(weight: number, total: number, servers: number): number {
  const f = Math.fround;
  const pct = f(f(weight) / f(total));
  const v = f(f(f(pct * POINTS_PER_SERVER) / 4) * f(servers));
  return Math.floor(f(v + 0.0000000001)) * 4;
}

export class KetamaRing {
  /** Point values, ascending, and the server index of each. */
  private readonly values: Uint32Array;
  private readonly owner: Uint16Array;

  constructor(
    readonly servers: readonly RingServer[],
    readonly hash: KetamaHash,
  ) {
    if (servers.length === 0) throw new Error('a ketama ring needs at least one server');
    const total = servers.reduce((n, s) => n + s.weight, 0);
    const points: { value: number; server: number }[] = [];
    servers.forEach((s, server) => {
      const name = pointName(s);
      const n = pointsFor(s.weight, total, servers.length);
      for (let i = 0; i < n / 4; i++) {
        const d = md5(`${name}-${i}`);
        for (let a = 0; a < 4; a++) points.push({ value: d.readUInt32LE(a * 4), server });
      }
    });
    // Equal values (a 32-bit collision) are ordered by server, where the C qsort's order is
    // unspecified.
    points.sort((x, y) => x.value - y.value || x.server - y.server);
    this.values = Uint32Array.from(points, (p) => p.value);
    this.owner = Uint16Array.from(points, (p) => p.server);
  }

  /** Index of the first point at or after `h`, wrapping around. */
  private pointAt(h: number): number {
    let lo = 0;
    let hi = this.values.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.values[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return hi === this.values.length ? 0 : hi;
  }

  /** The server (index into `servers`) a reader's client sends `key` to. */
  serverFor(key: Buffer): number {
    return this.owner[this.pointAt(keyHash(key, this.hash))]!;
  }

  /** `n` distinct servers for `key`: its own, then the next ones on the ring (its replicas). */
  owners(key: Buffer, n: number): number[] {
    const want = Math.min(n, this.servers.length);
    const out: number[] = [];
    for (let i = this.pointAt(keyHash(key, this.hash)), seen = 0; out.length < want && seen < this.values.length; i = (i + 1) % this.values.length, seen++) {
      const s = this.owner[i]!;
      if (!out.includes(s)) out.push(s);
    }
    return out;
  }
}
