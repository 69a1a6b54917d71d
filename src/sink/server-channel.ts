/**
 * One memcached server as a data center's workers see it: healthy, down, or recovering.
 *
 * - Healthy: ops are written at once (pipelined).
 * - Down (refused, timed out, unreachable): ops it missed are kept for it, coalesced per key
 *   (the last op of a key is all that matters), bounded; the other servers go on without it.
 *   A probe asks it who it is (`stats`: pid and start time) until it answers.
 * - Recovering: if it restarted (new pid/start time), if the missed ops overflowed their bound, or
 *   if a previous worker left it marked dirty (its missed ops died with that worker), it is
 *   flushed first, so it cannot keep serving a value that a later set or delete replaced. If it
 *   is the same process (paused, or the network blinked), nothing is written to it until every
 *   request sent before the failure has been processed or can never be (`whenDrained`), so no
 *   old write can land after the replay. Then the missed ops are replayed; ops arriving
 *   meanwhile join them, until what is left is two replay batches or less: from then on new ops
 *   wait for the replay to finish instead (a moment), so a server that returns under a steady
 *   stream catches up rather than chasing it through the store. Only when nothing is left does
 *   it count as healthy again.
 * The dirty mark is saved (ChannelStore) before a job completes without the server, so a worker
 * that crashes meanwhile cannot leave a stale server behind.
 *
 * A server is *complete* when mcrepl knows it holds every key it should: it has seen every op
 * since the data center's stream began and lost nothing, or it was warmed from a complete peer.
 * A server with no saved state in a data center that has applied ops before is not (see start).
 * One that restarted or was flushed is not, until a warm from a complete peer; it may be warmed from an incomplete peer, or start empty, when no
 * complete one is healthy (after waiting `warmWaitMs` for one that is down but may come back with
 * its data), and is then warmed again (`rewarm`) once a complete peer is healthy. Without that,
 * a data center whose servers restart one after the other would lose the keys for good.
 */
import { EventEmitter } from 'node:events';
import { sleep } from '../coordination/lease.js';
import { errorMessage } from '../errors.js';
import { printableKey, type WriteableOp } from '../fanout/op.js';
import type { Logger } from '../observability/logger.js';
import { toWrite, type MemcachedWriter, type Refusal, type ServerIdentity } from './memcached-writer.js';
import { MissedOps } from './missed-op-replay.js';
import type { MissedOpStore } from './missed-ops.js';

export type { WriteableOp } from '../fanout/op.js';
export { toWrite } from './memcached-writer.js';
export type { Refusal } from './memcached-writer.js';
export type ServerHealth = 'healthy' | 'down' | 'recovering';


/** A server's state as saved for other processes (status) and for the next worker. */
export interface SavedServerState {
  health: ServerHealth;
  /** It may hold values that later ops replaced and that were not kept for it: flush before use. */
  mustFlush: boolean;
  identity?: ServerIdentity;
  /** False: it lost keys (restarted, flushed) and has not been warmed from a complete peer since. Absent: true. */
  complete?: boolean;
}

/**
 * What a warm did: copied from a complete peer, or from an incomplete one (the target stays
 * incomplete); `wait`: no peer is healthy, but one that may hold every key is down: try again
 * later; `none`: no peer to copy from, the server starts empty (incomplete); `alone`: no other
 * copy of its keys exists (ketama, replicas 1, no backup): it starts empty, and complete.
 */
export type WarmResult = 'complete' | 'partial' | 'wait' | 'none' | 'alone';

/** Where a server's state outlives the worker. */
export interface ChannelStore {
  save(address: string, state: SavedServerState): Promise<void>;
}

export interface ChannelOptions {
  logger: Logger;
  store: ChannelStore;
  /** Where its missed ops are kept (Redis in production). */
  missed: MissedOpStore;
  /** Aborted on shutdown: writes and recovery stop. */
  signal: AbortSignal;
  onRefused: (refusals: Refusal[]) => Promise<void>;
  probeIntervalMs: number;
  /** How often a healthy server is asked who it is, to notice a restart (or death) between writes. */
  checkIntervalMs: number;
  settleMs: number;
  /**
   * Copies a healthy peer's keys onto this (flushed or restarted) server. `mayWait`: the target
   * has waited less than `warmWaitMs` for a complete peer, so `wait` is an allowed answer.
   */
  warm?: (target: ServerChannel, mayWait: boolean) => Promise<WarmResult>;
  /** How long a server that lost its keys waits for a complete peer that is down (ms). */
  warmWaitMs?: number;
  /** Clock in unix seconds (tests). */
  now?: () => number;
}

export interface ChannelEvents {
  health: [ServerHealth];
}

/** A different process answers: it restarted (and is empty). */
function isRestart(was: ServerIdentity, now: ServerIdentity): boolean {
  return now.pid !== was.pid || Math.abs(now.startedAt - was.startedAt) > 2;
}

export class ServerChannel extends EventEmitter<ChannelEvents> {
  private _health: ServerHealth = 'healthy';
  /** Missed ops were dropped (bound overflowed) or its state is unknown: flush before replay. */
  private mustFlush = false;
  /** It lost keys (restarted, flushed, or a warm from a complete peer is due): copy a peer's before replaying. */
  private needsWarm = false;
  private _complete = true;
  /** When it started waiting for a complete peer (ms), while it waits. */
  private warmWaitSince: number | undefined;
  private warnedWait = false;
  private identity: ServerIdentity | undefined;
  private recovery: Promise<void> | undefined;
  /** The ops it missed while down, and their replay. */
  private readonly missed: MissedOps;
  private checkTimer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  readonly stats = { missed: 0, overflows: 0, flushes: 0, warms: 0, recoveries: 0, restarts: 0 };

  constructor(
    readonly writer: MemcachedWriter,
    private readonly opts: ChannelOptions,
  ) {
    super();
    this.setMaxListeners(0); // every waiting partition listens
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.missed = new MissedOps(opts.missed, {
      signal: opts.signal,
      now: this.now,
      address: writer.address,
      onRefused: opts.onRefused,
      onOverflow: async () => {
        this.stats.overflows++;
        this.opts.logger.warn({ server: this.address }, 'too many missed ops kept for a server that is down: dropped them; it will be flushed when it returns');
        this.mustFlush = true;
        await this.save();
      },
    });
  }

  get address(): string {
    return this.writer.address;
  }

  get health(): ServerHealth {
    return this._health;
  }

  /** Holds every key it should, as far as anyone knows (see the class comment). */
  get complete(): boolean {
    return this._complete;
  }

  private setHealth(h: ServerHealth): void {
    if (h === this._health) return;
    this._health = h;
    this.emit('health', h);
    if (h !== 'healthy') void this.save().catch(() => undefined); // best effort; status only
    this.watch();
  }

  /**
   * While healthy, ask the server now and then who it is: a server that restarted between two
   * writes is empty, and gets warmed; one that died while idle is noticed before the next write.
   */
  private watch(): void {
    clearTimeout(this.checkTimer);
    if (this._health !== 'healthy' || this.opts.signal.aborted) return;
    this.checkTimer = setTimeout(() => {
      if (this.opts.signal.aborted) return;
      void this.writer.identity().then(
        (id) => {
          if (this._health !== 'healthy') return;
          if (this.identity && isRestart(this.identity, id)) {
            this.goDown('restarted since it was last seen', 'memcached server restarted: keeping its ops until it is warmed');
          } else {
            this.identity ??= id;
            this.watch();
          }
        },
        (err: unknown) => {
          if (this._health === 'healthy') this.goDown(errorMessage(err));
        },
      );
    }, this.opts.checkIntervalMs);
    this.checkTimer.unref();
  }

  private async save(): Promise<void> {
    await this.opts.store.save(this.address, {
      health: this._health,
      mustFlush: this.mustFlush,
      ...(this.identity ? { identity: this.identity } : {}),
      ...(this._complete ? {} : { complete: false }),
    });
  }

  /**
   * Picks up where a previous worker left the server (its saved state and missed ops), or asks
   * the server who it is. A server with no saved state (new in the config, or its state lost)
   * is complete only if it has seen the stream from its start (`dcHasHistory` false: this data
   * center has applied nothing yet); otherwise it missed what came before and is warmed from a
   * complete peer, never chosen as one.
   */
  async start(saved: SavedServerState | undefined, dcHasHistory: boolean): Promise<void> {
    this.identity = saved?.identity;
    this.mustFlush = saved?.mustFlush ?? false;
    this._complete = saved ? saved.complete !== false : !dcHasHistory;
    if (!saved && dcHasHistory) this.opts.logger.warn({ server: this.address }, 'a server mcrepl has no record of (new in the config, or its state was lost): it counts as missing keys until it is warmed from a complete peer');
    const missed = await this.missed.count();
    if (this.mustFlush || missed > 0 || (saved && saved.health !== 'healthy')) {
      this.opts.logger.warn({ server: this.address, missed, mustFlush: this.mustFlush }, 'server was not up to date when the previous worker stopped: recovering it first');
      this.goDown('not up to date at start', 'memcached server not ready');
      return;
    }
    try {
      const id = await this.writer.identity();
      if (this.identity && isRestart(this.identity, id)) {
        // It restarted while no worker watched it: empty. Recovery sees the new identity and warms it.
        this.goDown('restarted while no worker was running', 'memcached server restarted while no worker was running: warming it before use');
        return;
      }
      this.identity = id;
      await this.save();
      this.watch();
    } catch (err) {
      this.goDown(errorMessage(err), 'memcached server not ready');
    }
  }

  /**
   * A server that joins the data center (membership.ts): it may hold values from an earlier
   * life, so it is flushed before first use; ops for it are kept until then.
   */
  startFlushed(): void {
    this.mustFlush = true;
    this._complete = true;
    this.goDown('joins the data center', 'a server joins the data center: flushing it before first use');
  }

  /** Applies ops (distinct keys) or keeps them for later; resolves when each is one or the other. */
  async submit(ops: readonly WriteableOp[]): Promise<void> {
    if (ops.length === 0) return;
    const catchingUp = this._health !== 'healthy' ? this.missed.catchingUp : undefined;
    if (catchingUp) {
      await catchingUp;
      if (this.health === 'healthy') return this.submit(ops); // the getter: narrowing does not survive the await
    }
    if (this._health !== 'healthy') {
      await this.keep(ops);
      return;
    }
    let pending = ops;
    for (let round = 0; pending.length > 0 && round < 2; round++) {
      const now = this.now();
      const outcomes = await this.writer.write(pending.map((op) => toWrite(op, now)));
      const failed: WriteableOp[] = [];
      const again: WriteableOp[] = [];
      const refused: Refusal[] = [];
      let lastError = '';
      outcomes.forEach((o, i) => {
        if (o.ok) return;
        const op = pending[i]!;
        if (o.retriable) {
          failed.push(op);
          lastError = o.error;
        } else {
          refused.push({ op, server: this.address, reason: o.error, keyDeleted: op.kind === 'set' });
          // The set was meant to replace the key's value: delete it rather than leave the old one.
          if (op.kind === 'set') again.push({ kind: 'delete', t: op.t, nsId: op.nsId, key: op.key });
        }
      });
      if (refused.length > 0) {
        for (const r of refused) this.opts.logger.warn({ server: r.server, key: printableKey(r.op.key), reason: r.reason }, 'memcached refused an op for good; dead-lettered');
        await this.opts.onRefused(refused);
      }
      if (failed.length > 0) {
        // Kept durably before the job can complete without this server.
        await this.keep(failed);
        this.goDown(lastError);
      }
      pending = again;
    }
    if (pending.length > 0) await this.keep(pending);
  }

  /** Keeps ops for when it is back (durably, before the job can complete without it). */
  private async keep(ops: readonly WriteableOp[]): Promise<void> {
    this.stats.missed += ops.length;
    await this.missed.keep(ops);
  }

  /**
   * A healthy but incomplete server is warmed again from a complete peer that is healthy now
   * (the worker calls this when one becomes healthy). Ops arriving meanwhile are kept and
   * replayed after the copy, as in any recovery.
   */
  rewarm(): void {
    if (this._health !== 'healthy' || this._complete || this.opts.signal.aborted) return;
    this.needsWarm = true;
    this.goDown('a complete peer is healthy', 'server is missing keys: warming it again from a peer that holds them all');
  }

  private goDown(reason: string, message = 'memcached server down: keeping its ops until it returns'): void {
    if (this._health === 'healthy') this.opts.logger.warn({ server: this.address, reason }, message);
    this.setHealth('down');
    this.recoverSoon(0);
  }

  /**
   * Runs the recovery loop unless it runs already. A loop that ends (healthy, or stopped by an
   * error) while the server is not healthy, because it went down again between the loop's last
   * check and its end (a write failed, or a rewarm was asked for, while its state was saved),
   * is started again rather than leaving the server down with nothing to bring it back.
   */
  private recoverSoon(delayMs: number): void {
    if (this.recovery || this.opts.signal.aborted) return;
    this.recovery = (delayMs > 0 ? sleep(delayMs, this.opts.signal).then(() => this.recover()) : this.recover())
      .catch(() => undefined) // aborted while waiting
      .finally(() => {
        this.recovery = undefined;
        if (this._health !== 'healthy') this.recoverSoon(this.opts.probeIntervalMs);
      });
  }

  private async recover(): Promise<void> {
    const signal = this.opts.signal;
    let restarted = false;
    try {
      for (;;) {
        // Probe until it answers.
        let id: ServerIdentity | undefined;
        while (!id) {
          signal.throwIfAborted();
          try {
            id = await this.writer.identity();
          } catch {
            await sleep(this.opts.probeIntervalMs, signal);
          }
        }
        this.setHealth('recovering');
        const isNew = this.identity !== undefined && isRestart(this.identity, id);
        if (isNew) {
          restarted = this.needsWarm = true;
          this._complete = false;
          this.stats.restarts++;
          this.writer.forgetUnconfirmed?.();
          this.opts.logger.warn({ server: this.address, was: this.identity, now: id }, 'memcached server restarted (it is empty)');
        }
        this.identity = id;
        try {
          // The same process: whatever it still holds from before the failure must land before
          // anything written now (a flush, a warm, the replay).
          if (!isNew) await this.whenDrained();
          if (this.mustFlush) {
            // It may hold values that later ops replaced: start from empty.
            await this.writer.flushAll();
            this.stats.flushes++;
            this.mustFlush = false;
            this.needsWarm = true;
            this._complete = false;
            await this.save();
            this.opts.logger.warn({ server: this.address }, 'server flushed: it could hold values that later ops replaced');
          }
          if (this.needsWarm) {
            // Empty: copy a healthy peer's keys first; what it missed is replayed after, and wins.
            const waitMs = this.opts.warmWaitMs ?? 0;
            const since = (this.warmWaitSince ??= Date.now());
            const result = this.opts.warm ? await this.opts.warm(this, Date.now() - since < waitMs) : 'none';
            if (result === 'wait') {
              if (!this.warnedWait) {
                this.warnedWait = true;
                this.opts.logger.warn({ server: this.address, waitMs }, 'no healthy peer to warm from, but one that holds every key is down: waiting for it');
              }
              await sleep(this.opts.probeIntervalMs, signal);
              continue;
            }
            this.warmWaitSince = undefined;
            this.warnedWait = false;
            if (result === 'none') this.opts.logger.warn({ server: this.address }, 'no healthy peer to warm from: the server starts empty and is warmed once a complete peer is healthy');
            else if (result === 'alone') this.opts.logger.info({ server: this.address }, 'no other server holds its keys (ketama, replicas 1): it starts empty and readers fill it');
            else this.stats.warms++;
            if (result === 'partial') this.opts.logger.warn({ server: this.address }, 'warmed from a peer that is missing keys itself: warmed again once a complete peer is healthy');
            this._complete = result === 'complete' || result === 'alone';
            this.needsWarm = false;
            await this.save();
          }
        } catch (err) {
          signal.throwIfAborted();
          this.opts.logger.warn({ server: this.address, err: errorMessage(err) }, 'could not flush or warm a returning server; will try again');
          this.setHealth('down');
          await sleep(this.opts.probeIntervalMs, signal);
          continue;
        }
        if (await this.replay()) {
          this.stats.recoveries++;
          this.emit('health', 'healthy');
          this.watch();
          await this.save();
          this.opts.logger.info({ server: this.address, restarted, complete: this._complete }, 'memcached server healthy again');
          return;
        }
        this.setHealth('down');
        await sleep(this.opts.probeIntervalMs, signal);
      }
    } catch (err) {
      if (!signal.aborted) this.opts.logger.error({ server: this.address, err: errorMessage(err) }, 'server recovery stopped');
    }
  }

  /**
   * Resolves once nothing sent to the server before can still be processed by it. The meta
   * writer knows: its connection stays open through a stall, so the probe that just answered on
   * it came after every earlier request, and a connection that closed with requests unanswered
   * is waited for until the server no longer lists it. A writer that cannot tell (memjs) waits
   * `settleMs` and hopes.
   */
  private async whenDrained(): Promise<void> {
    const signal = this.opts.signal;
    if (!this.writer.drained) {
      await sleep(this.opts.settleMs, signal);
      return;
    }
    let logged = false;
    while (!(await this.writer.drained())) {
      if (!logged) this.opts.logger.warn({ server: this.address }, 'an old connection of this worker, closed with requests unanswered, is still open on the server: waiting for it to go before writing again');
      logged = true;
      await sleep(this.opts.probeIntervalMs, signal);
    }
  }

  /**
   * Writes the missed ops until none are left and no more are on their way; false if the server
   * failed again. Returns with the health still 'recovering', so nothing is written around it.
   */
  private replay(): Promise<boolean> {
    return this.missed.replay(
      this.writer,
      () => this.mustFlush, // overflowed meanwhile: start over with a flush
      () => {
        this._health = 'healthy';
      },
    );
  }

  /**
   * Redis restarted and may have lost the newest of the ops kept for this server: unless it is
   * healthy (nothing kept), flush it on return rather than trust what is left.
   */
  requireFlush(): void {
    if (this._health === 'healthy') return;
    this.mustFlush = true;
    void this.save().catch(() => undefined);
  }

  /** Stops the periodic check (the recovery loop stops with the signal). */
  stop(): void {
    clearTimeout(this.checkTimer);
  }

  /** Resolves when the server is healthy (or the signal aborts). */
  whenHealthy(): Promise<void> {
    if (this._health === 'healthy') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onHealth = (h: ServerHealth) => {
        if (h !== 'healthy') return;
        this.off('health', onHealth);
        this.opts.signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        this.off('health', onHealth);
        reject(this.opts.signal.reason);
      };
      this.on('health', onHealth);
      this.opts.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
