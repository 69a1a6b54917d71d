/**
 * A data center's servers changing while it runs (decision 0026): the config reloaded on
 * SIGHUP, or the addresses a DNS name resolves to. The servers its keys were last placed on
 * are kept in Redis (`ring:<dc>`); whenever they differ from the servers wanted now, a
 * migration moves the keys, one at a time per data center:
 *
 * 1. Servers that join get a channel of their own; each is flushed before first use (it may
 *    hold values from an earlier life) and waited for.
 * 2. Every op now goes to its servers under both placements (MigrationRoute), from the moment
 *    every apply routed the old way has finished.
 * 3. Each key whose new servers include one it is not on yet is copied there from the first
 *    healthy server that holds it, with its remaining TTL, with memcached `add`: a write that
 *    got there first is never overwritten. A key deleted meanwhile is deleted again on the new
 *    server after its copy (the copy could have landed after the delete).
 * 4. The new placement takes over and is recorded in Redis.
 * 5. Every server drops the keys it does not hold under the new placement (the moved ones: a
 *    reader still on the old ring misses rather than reads a value that is no longer updated);
 *    servers that left are flushed and forgotten. Then the change is reported done.
 *
 * Progress is in Redis (`migration:<dc>`) for `mcrepl status`. A worker that stops mid-way
 * leaves the old placement recorded, and the next one starts the move again (steps 1-3 are
 * idempotent); one that stops during step 5 finishes it at the next start.
 */
import type { DatacenterConfig } from '../config/schema.js';
import { sleep } from '../coordination/lease.js';
import { errorMessage } from '../errors.js';
import type { WriteableOp } from '../fanout/op.js';
import type { Logger } from '../observability/logger.js';
import { deleteForeignKeys } from './foreign-keys.js';
import { MetaClient, type Fence } from './meta-client.js';
import type { Placement } from './op-applier.js';
import { MigrationRoute } from './routes/migration-route.js';
import { createRoute } from './routes/create-route.js';
import type { ServerChannel } from './server-channel.js';

/** Where keys are placed, as recorded: the data center's config minus what does not place keys. */
export type PlacementSpec = DatacenterConfig;

export interface MigrationProgress {
  from: string[];
  to: string[];
  phase: 'copying' | 'cleaning' | 'done' | 'failed';
  startedAt: string;
  finishedAt?: string;
  /** Keys listed on the old servers, copied to a new server, deleted where they no longer belong. */
  scanned: number;
  copied: number;
  deleted: number;
  error?: string;
}

/** What membership needs from the worker group. */
export interface MembershipHost {
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly fence: Fence;
  readonly timeoutMs: number;
  /**
   * Keys can be listed and copied (the text protocol). Under SASL they cannot: the new servers
   * take over without a copy (moved keys are missing until written again) and only servers that
   * left are flushed.
   */
  readonly canCopy: boolean;
  placement(): Placement;
  setPlacement(p: Placement): Promise<void>;
  /** Sees every op written while a migration copies (see OpApplier.watch). */
  watchOps(fn: ((ops: readonly WriteableOp[]) => void) | undefined): void;
  /** A channel for a server that joins: flushed before first use. */
  join(address: string): Promise<ServerChannel>;
  /** A server that left: its channel stopped, its saved state and missed ops forgotten. */
  leave(c: ServerChannel): Promise<void>;
  saveSpec(spec: PlacementSpec): Promise<void>;
  saveProgress(p: MigrationProgress): Promise<void>;
}

/** The servers a spec lists, in a form that compares equal when the placement is the same. */
export function describeSpec(spec: PlacementSpec): string[] {
  if (spec.routing === 'replicate') return [...spec.servers].sort();
  return [...[...spec.servers].sort(), ...spec.backup.map((b) => `backup ${b}`).sort(), `hash ${spec.hash}`, `replicas ${spec.replicas}`];
}

export function samePlacement(a: PlacementSpec, b: PlacementSpec): boolean {
  return JSON.stringify(describeSpec(a)) === JSON.stringify(describeSpec(b));
}

const COPY_BATCH = 1_000;

export class Membership {
  private chain: Promise<void> = Promise.resolve();
  private wanted: PlacementSpec;
  /** The placement in effect (recorded in Redis). */
  private current: PlacementSpec;
  private lastSaved = 0;

  constructor(
    private readonly host: MembershipHost,
    current: PlacementSpec,
  ) {
    this.current = current;
    this.wanted = current;
  }

  /** Resolved when the servers wanted change again (a move waiting for a server gives way). */
  private superseded: { promise: Promise<void>; resolve: () => void } = Membership.signal();

  private static signal(): { promise: Promise<void>; resolve: () => void } {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  }

  /** Moves to `spec` (after any move under way); resolves once it is in place. */
  change(spec: PlacementSpec): Promise<void> {
    this.wanted = spec;
    this.superseded.resolve();
    this.superseded = Membership.signal();
    this.chain = this.chain.then(() => this.reconcile());
    return this.chain;
  }

  /** Runs `fn` when no move is under way (and before any that comes after): e.g. a sweep that lists the servers. */
  exclusive(fn: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(fn, fn);
    return this.chain;
  }

  /** Finishes a step 5 a previous worker left undone (its progress said `cleaning`). */
  resumeCleanup(progress: MigrationProgress): Promise<void> {
    this.chain = this.chain.then(() => this.cleanupUntilDone(progress, progress.from.filter((s) => !this.host.placement().route.servers.includes(s))));
    return this.chain;
  }

  private async cleanupUntilDone(progress: MigrationProgress, gone: string[], old: readonly ServerChannel[] = []): Promise<void> {
    for (;;) {
      try {
        await this.cleanup(progress, gone, old);
        return;
      } catch (err) {
        if (this.host.signal.aborted) return;
        this.host.logger.warn({ err: errorMessage(err) }, 'could not delete what no longer belongs where it is, after a change of servers; retrying');
        await sleep(2_000, this.host.signal).catch(() => undefined);
      }
    }
  }

  /**
   * Whether the server can be read now: healthy, or healthy again within a while (a server
   * recovering from a blip, a paused one coming back). One that stays down is passed over.
   */
  private async answering(c: ServerChannel): Promise<boolean> {
    if (c.health === 'healthy') return true;
    const waitMs = this.host.timeoutMs * 6;
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), waitMs)));
    try {
      return await Promise.race([c.whenHealthy().then(() => true), gaveUp]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async reconcile(): Promise<void> {
    for (let attempt = 0; !this.host.signal.aborted && !samePlacement(this.current, this.wanted); attempt++) {
      const to = this.wanted;
      try {
        await this.migrate(to);
        this.current = to;
      } catch (err) {
        if (this.host.signal.aborted) return;
        const delay = Math.min(1_000 * 2 ** attempt, 30_000);
        this.host.logger.warn({ err: errorMessage(err), retryInMs: delay }, 'changing the servers failed; starting it again');
        await sleep(delay, this.host.signal).catch(() => undefined);
      }
    }
  }

  private async save(p: MigrationProgress, force = false): Promise<void> {
    if (!force && Date.now() - this.lastSaved < 1_000) return;
    this.lastSaved = Date.now();
    await this.host.saveProgress(p);
  }

  private async migrate(toSpec: PlacementSpec): Promise<void> {
    const { logger } = this.host;
    // Taken before anything is awaited: a change that comes while this one waits for a server
    // must be seen.
    const changedAgain = this.superseded.promise;
    const from = this.host.placement();
    const to = createRoute(toSpec);
    const progress: MigrationProgress = { from: [...from.route.servers], to: [...to.servers], phase: 'copying', startedAt: new Date().toISOString(), scanned: 0, copied: 0, deleted: 0 };
    logger.info({ from: describeSpec(this.current), to: describeSpec(toSpec) }, 'the servers changed: moving keys to their new servers');
    await this.save(progress, true);

    const byAddress = new Map(from.channels.map((c) => [c.address, c]));
    const joined: ServerChannel[] = [];
    const deleted = new Set<string>();
    try {
      // 1. Servers that join.
      for (const address of to.servers) {
        if (byAddress.has(address)) continue;
        const c = await this.host.join(address);
        byAddress.set(address, c);
        joined.push(c);
      }
      // A server that never answers holds the move up until the servers wanted change again.
      const superseded = changedAgain.then(() => {
        throw new Error('the servers wanted changed again before the new ones answered');
      });
      superseded.catch(() => undefined);
      for (const c of joined) if (c.health !== 'healthy') logger.info({ server: c.address }, 'waiting for a server that joins to answer');
      await Promise.race([Promise.all(joined.map((c) => c.whenHealthy())), superseded]);

      // 2. Writes to both placements.
      const migration = new MigrationRoute(from.route, to);
      this.host.watchOps((ops) => {
        for (const op of ops) if (op.kind === 'delete') deleted.add(op.key.toString('latin1'));
      });
      await this.host.setPlacement({ channels: migration.servers.map((a) => byAddress.get(a)!), route: migration });

      // 3. Copy what moves.
      if (!this.host.canCopy) logger.warn('keys cannot be listed under SASL: the new servers take over without a copy, and moved keys are missing until written again');
      for (const [i, source] of from.channels.entries()) {
        if (!this.host.canCopy) break;
        if (!(await this.answering(source))) {
          logger.warn({ server: source.address }, 'a server is down during the move: the keys only it held are missing on their new servers until written again');
          continue;
        }
        await this.copyFrom(source, i, from, to, byAddress, deleted, progress);
      }

      // 4. The new placement.
      await this.host.setPlacement({ channels: to.servers.map((a) => byAddress.get(a)!), route: to });
      this.host.watchOps(undefined);
      await this.host.saveSpec(toSpec);
    } catch (err) {
      // Back to the old placement; the servers that joined go again (the next attempt flushes
      // them anew, and copies again).
      this.host.watchOps(undefined);
      progress.phase = 'failed';
      progress.error = errorMessage(err);
      await this.save(progress, true).catch(() => undefined);
      await this.host.setPlacement(from);
      for (const c of joined) await this.host.leave(c).catch(() => undefined);
      throw err;
    }
    this.current = toSpec;
    progress.phase = 'cleaning';
    await this.save(progress, true);

    // 5. Nothing where it no longer belongs (tried until it is done).
    await this.cleanupUntilDone(progress, from.route.servers.filter((a) => !to.servers.includes(a)), from.channels);
  }

  /** Copies the keys `source` (server `i` of `from`) is the first healthy holder of to their new servers. */
  private async copyFrom(source: ServerChannel, i: number, from: Placement, to: ReturnType<typeof createRoute>, byAddress: Map<string, ServerChannel>, deleted: Set<string>, progress: MigrationProgress): Promise<void> {
    const { timeoutMs, fence, signal } = this.host;
    const reader = new MetaClient(source.address, timeoutMs);
    const writers = new Map<string, MetaClient>();
    const writer = (a: string) => writers.get(a) ?? writers.set(a, new MetaClient(a, timeoutMs, fence)).get(a)!;
    try {
      await MetaClient.eachKey(source.address, timeoutMs, COPY_BATCH, async (keys) => {
        signal.throwIfAborted();
        progress.scanned += keys.length;
        // Per new server, the keys to copy there.
        const targets = new Map<string, Buffer[]>();
        const wanted: Buffer[] = [];
        for (const key of keys) {
          const holders = from.route.holders(key);
          if (!holders.includes(i) || holders.find((h) => from.channels[h]!.health === 'healthy') !== i) continue;
          const oldHolders = new Set(holders.map((h) => from.route.servers[h]!));
          const news = to.holders(key).map((t) => to.servers[t]!).filter((a) => !oldHolders.has(a));
          if (news.length === 0) continue;
          wanted.push(key);
          for (const a of news) (targets.get(a) ?? targets.set(a, []).get(a)!).push(key);
        }
        if (wanted.length === 0) return;
        const values = await reader.getWithTtl(wanted);
        const value = new Map(wanted.map((k, j) => [k.toString('latin1'), values[j]]));
        for (const [address, list] of targets) {
          const entries = list.flatMap((key) => {
            const v = value.get(key.toString('latin1'));
            return v && v.ttl !== 0 && !deleted.has(key.toString('latin1')) ? [{ key, value: v.value, ttl: v.ttl }] : [];
          });
          await writer(address).addWithTtl(entries);
          progress.copied += entries.length;
          // Deleted while it was copied: the copy may have landed after the delete.
          const again = entries.filter((e) => deleted.has(e.key.toString('latin1')));
          if (again.length > 0) await byAddress.get(address)!.submit(again.map((e) => ({ kind: 'delete' as const, t: 0, nsId: 0, key: e.key })));
        }
        await this.save(progress);
      });
    } finally {
      reader.close();
      for (const w of writers.values()) w.close();
    }
  }

  /**
   * Step 5: every server of the placement in effect drops the keys it does not hold; servers that
   * left (`gone`) are flushed, then forgotten.
   */
  private async cleanup(progress: MigrationProgress, gone: string[], old: readonly ServerChannel[] = []): Promise<void> {
    const { channels, route } = this.host.placement();
    if (this.host.canCopy) {
      // A server down now is left as it is; the next move, or its flush on return, settles it.
      await deleteForeignKeys(channels, route, {
        timeoutMs: this.host.timeoutMs,
        signal: this.host.signal,
        usable: (c) => this.answering(c),
        onDeleted: async (n) => {
          progress.deleted += n;
          await this.save(progress);
        },
      });
    }
    for (const address of gone) {
      const c = old.find((x) => x.address === address) ?? (await this.host.join(address));
      try {
        await c.writer.flushAll();
      } catch (err) {
        this.host.logger.warn({ server: address, err: errorMessage(err) }, 'could not flush a server that left the data center (readers still on the old servers may read what it holds)');
      }
      await this.host.leave(c);
    }
    progress.phase = 'done';
    progress.finishedAt = new Date().toISOString();
    await this.save(progress, true);
    this.host.logger.info({ to: progress.to, copied: progress.copied, deleted: progress.deleted }, 'the change of servers is done');
  }
}
