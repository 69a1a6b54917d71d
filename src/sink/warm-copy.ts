/**
 * Warming: a server that came back empty (restarted) or was flushed gets the keys it should
 * hold copied from its peers, with their remaining TTLs, before its missed ops are replayed
 * (which win over anything copied). Which peers, and which of their keys, the data center's
 * route says (`Route.warmPeers`, `Route.holds`):
 *
 * - `replicate`: any peer is a full copy.
 * - `ketama`: a backup server is a full copy of any server; with `replicas` 2 or more, the other
 *   servers of the ring together hold every key a server owns (each some). Only the keys the
 *   target owns are copied. With `replicas: 1` and no backup there is no other copy: the server
 *   starts empty, and that is as complete as it can be (it is a cache; readers fill it).
 *
 * A server counts as complete after a warm only if what it was copied from was: a complete full
 * copy, or every part complete and healthy. Otherwise it is warmed again (`linkPeers`) once
 * that has become possible.
 */
import type { Fence } from './meta-client.js';
import { MetaClient } from './meta-client.js';
import type { Route } from './routes/route.js';
import type { ServerChannel, WarmResult } from './server-channel.js';

/**
 * The peers to copy from: `complete` when they hold every key the target should; `wait` when
 * none is healthy but one that may hold them (restarted or not, not known yet) is down;
 * `none` when no peer can give anything now; `nothing` when no other copy exists at all.
 */
export type WarmChoice = { peers: ServerChannel[]; complete: boolean } | 'wait' | 'none' | 'nothing';

export function chooseWarmPeers(target: number, channels: readonly ServerChannel[], route: Route, mayWait: boolean): WarmChoice {
  const { full, parts } = route.warmPeers(target);
  if (full.length === 0 && parts.length === 0) return 'nothing';
  const usable = (c: ServerChannel) => c.health === 'healthy';
  const fullPeers = full.map((i) => channels[i]!);
  const partPeers = parts.map((i) => channels[i]!);
  const completeFull = fullPeers.find((c) => usable(c) && c.complete);
  if (completeFull) return { peers: [completeFull], complete: true };
  if (partPeers.length > 0 && partPeers.every((c) => usable(c) && c.complete)) return { peers: partPeers, complete: true };
  const someFull = fullPeers.find(usable);
  const healthyParts = partPeers.filter(usable);
  if (!someFull && healthyParts.length === 0) return mayWait && [...fullPeers, ...partPeers].some((c) => c.complete) ? 'wait' : 'none';
  return { peers: [...(someFull ? [someFull] : []), ...healthyParts], complete: false };
}

/**
 * Whenever a server becomes healthy, every healthy server that is missing keys and could now be
 * warmed completely is warmed again (`rewarm`). `watch` each server as it is added; `check` once
 * they have started.
 */
export class Rewarmer {
  private readonly watched = new WeakSet<ServerChannel>();

  constructor(private readonly placement: () => { channels: readonly ServerChannel[]; route: Route }) {}

  watch(c: ServerChannel): void {
    if (this.watched.has(c)) return;
    this.watched.add(c);
    c.on('health', (h) => h === 'healthy' && this.check());
  }

  check(): void {
    const { channels, route } = this.placement();
    channels.forEach((c, i) => {
      if (c.health !== 'healthy' || c.complete) return;
      const choice = chooseWarmPeers(i, channels, route, false);
      if (typeof choice === 'object' && choice.complete) c.rewarm();
    });
  }
}

/** A Rewarmer over a fixed set of servers; returns its check. */
export function linkPeers(channels: readonly ServerChannel[], route: Route): () => void {
  const r = new Rewarmer(() => ({ channels, route }));
  for (const c of channels) r.watch(c);
  return () => r.check();
}

export interface WarmCopyOptions {
  timeoutMs: number;
  /** Checked before each write to the target (the worker group's lease). */
  fence: Fence;
  signal: AbortSignal;
  /** Keys listed and copied per round trip. */
  batch?: number;
}

/** Copies onto `target` (index `at`) the keys it should hold that `peers` have; returns how many. */
export async function copyKeys(target: ServerChannel, at: number, peers: readonly ServerChannel[], route: Route, opts: WarmCopyOptions): Promise<number> {
  const to = new MetaClient(target.address, opts.timeoutMs, opts.fence);
  let copied = 0;
  try {
    for (const peer of peers) {
      const from = new MetaClient(peer.address, opts.timeoutMs);
      try {
        await MetaClient.eachKey(peer.address, opts.timeoutMs, opts.batch ?? 1_000, async (listed) => {
          opts.signal.throwIfAborted();
          const keys = listed.filter((k) => route.holds(at, k));
          if (keys.length === 0) return;
          const values = await from.getWithTtl(keys);
          const entries = values.flatMap((v, i) => (v && v.ttl !== 0 ? [{ key: keys[i]!, value: v.value, ttl: v.ttl }] : []));
          await to.setWithTtl(entries);
          copied += entries.length;
        });
      } finally {
        from.close();
      }
    }
  } finally {
    to.close();
  }
  return copied;
}

/** Warms `target` as `chooseWarmPeers` says; the `WarmResult` for the channel. */
export async function warmFromPeers(target: ServerChannel, channels: readonly ServerChannel[], route: Route, mayWait: boolean, opts: WarmCopyOptions & { log: (copied: number, peers: string[], complete: boolean) => void }): Promise<WarmResult> {
  const at = channels.indexOf(target);
  const choice = chooseWarmPeers(at, channels, route, mayWait);
  if (choice === 'nothing') return 'alone';
  if (choice === 'wait' || choice === 'none') return choice;
  const copied = await copyKeys(target, at, choice.peers, route, opts);
  opts.log(copied, choice.peers.map((p) => p.address), choice.complete);
  return choice.complete ? 'complete' : 'partial';
}
