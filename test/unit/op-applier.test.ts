import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { DeleteOp, SetOp } from '../../src/fanout/op.js';
import { silentLogger, type Logger } from '../../src/observability/logger.js';
import type { MemcachedWriter, ServerIdentity, WriteOp, WriteOutcome } from '../../src/sink/memcached-writer.js';
import { OpApplier, coalesce, toWrite } from '../../src/sink/op-applier.js';
import { type Route } from '../../src/sink/routes/route.js';
import { createRoute } from '../../src/sink/routes/create-route.js';
import { ReplicateRoute } from '../../src/sink/routes/replicate.js';
import { chooseWarmPeers, linkPeers } from '../../src/sink/warm-copy.js';
import { KetamaRing } from '../../src/sink/routes/ketama-ring.js';
import { datacenterSchema } from '../../src/config/schema.js';
import { MemoryMissedOpStore } from '../../src/sink/missed-ops.js';
import { ServerChannel, type ChannelOptions, type Refusal, type SavedServerState } from '../../src/sink/server-channel.js';

const NOW = 1_700_000_000;

const set = (key: string, value: string, expiresAt = 0, t = 1): SetOp => ({ kind: 'set', t, nsId: 1, key: Buffer.from(key), value: Buffer.from(value), expiresAt });
const del = (key: string, t = 1): DeleteOp => ({ kind: 'delete', t, nsId: 1, key: Buffer.from(key) });

/** A compact view of a request: `set k=v@exptime` or `delete k`. */
const show = (w: WriteOp) => (w.kind === 'set' ? `set ${w.key.toString()}=${w.value.toString()}@${w.exptime}` : `delete ${w.key.toString()}`);
const keyOf = (w: WriteOp) => w.key.toString();

const OK: WriteOutcome = { ok: true };
const TRANSIENT: WriteOutcome = { ok: false, retriable: true, error: 'connection refused' };
const tooLarge: WriteOutcome = { ok: false, retriable: false, error: 'Value too large' };

type Script = (ops: readonly WriteOp[], call: number) => WriteOutcome[] | Promise<WriteOutcome[]>;

/** A MemcachedWriter whose outcomes are decided by `script`; records every call. */
class FakeWriter implements MemcachedWriter {
  readonly calls: WriteOp[][] = [];
  /** Every request in order, with flush_all as 'FLUSH'. */
  readonly log: string[] = [];
  closed = false;
  /** While false, identity() (the probe) fails as a down server would. */
  up = true;
  id: ServerIdentity = { pid: 100, startedAt: 1_000 };
  flushes = 0;
  constructor(
    readonly address: string,
    public script: Script = (ops) => ops.map(() => OK),
  ) {}

  async write(ops: readonly WriteOp[]): Promise<WriteOutcome[]> {
    this.calls.push([...ops]);
    this.log.push(...ops.map(show));
    return this.script(ops, this.calls.length);
  }

  async identity(): Promise<ServerIdentity> {
    if (!this.up) throw new Error('connection refused');
    return this.id;
  }

  async flushAll(): Promise<void> {
    if (!this.up) throw new Error('connection refused');
    this.flushes++;
    this.log.push('FLUSH');
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  get shown(): string[][] {
    return this.calls.map((c) => c.map(show));
  }
}

/** Every test's controller, aborted after each test so no probe loop is left behind. */
const controllers: AbortController[] = [];
afterEach(() => {
  for (const c of controllers.splice(0)) c.abort(new Error('test over'));
});

interface Setup {
  channels: ServerChannel[];
  missed: MemoryMissedOpStore[];
  applier: OpApplier;
  refusals: Refusal[];
  /** Every state saved, per server. */
  saved: Map<string, SavedServerState[]>;
  /** Targets warmed. */
  warmed: string[];
  /** Each warm as `target<-peer`. */
  sources: string[];
  controller: AbortController;
}

async function setup(
  writers: FakeWriter[],
  over: Partial<ChannelOptions> & { missedMaxKeys?: number; route?: Route } = {},
  previous: Record<string, SavedServerState> = {},
  dcHasHistory = false,
): Promise<Setup> {
  const refusals: Refusal[] = [];
  const controller = new AbortController();
  controllers.push(controller);
  const saved = new Map<string, SavedServerState[]>();
  const warmed: string[] = [];
  const sources: string[] = [];
  const missed = writers.map(() => new MemoryMissedOpStore(over.missedMaxKeys));
  const route: Route = over.route ?? new ReplicateRoute(writers.map((w) => w.address));
  const channels: ServerChannel[] = writers.map(
    (w, i) =>
      new ServerChannel(w, {
        logger: silentLogger,
        store: { save: async (a, st) => void saved.set(a, [...(saved.get(a) ?? []), st]) },
        missed: missed[i]!,
        signal: controller.signal,
        onRefused: async (r) => void refusals.push(...r),
        probeIntervalMs: 1,
        checkIntervalMs: 60_000,
        settleMs: 0,
        // As the worker does: the peers chooseWarmPeers picks (the copy itself is not modelled).
        warm: async (target, mayWait) => {
          const choice = chooseWarmPeers(channels.indexOf(target), channels, route, mayWait);
          if (choice === 'nothing') return 'alone';
          if (choice === 'wait' || choice === 'none') return choice;
          warmed.push(target.address);
          for (const p of choice.peers) sources.push(`${target.address}<-${p.address}`);
          (target.writer as FakeWriter).log.push('WARM');
          return choice.complete ? 'complete' : 'partial';
        },
        now: () => NOW,
        ...over,
      }),
  );
  const rewarmIncomplete = linkPeers(channels, route);
  for (const c of channels) await c.start(previous[c.address], dcHasHistory);
  rewarmIncomplete();
  const applier = new OpApplier(channels, route, { logger: silentLogger, signal: controller.signal });
  return { channels, missed, applier, refusals, saved, warmed, sources, controller };
}

/** Yields to the event loop until `cond` holds (no fixed sleep); gives up after a second. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 1_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail('condition not reached within 1 s');
    await nextTurn();
  }
}

/** A pino logger that keeps its records in memory. */
function recordingLogger(): { logger: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const logger = pino({ level: 'trace' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, records };
}

describe('coalesce', () => {
  test('keeps the last op per key, in the order of those last ops', () => {
    const ops = [set('a', '1'), set('b', '1'), del('a'), set('c', '1'), set('b', '2')];
    assert.deepEqual(coalesce(ops), [del('a'), set('c', '1'), set('b', '2')]);
  });

  test('flush markers stay in place among the kept ops; the last op (and so the last t) is always kept', () => {
    const marker = { kind: 'flush' as const, t: 3, nsId: 1, flushId: 7, token: 'tok' };
    const ops = [set('a', '1'), del('b'), marker, set('a', '2'), del('c')];
    assert.deepEqual(coalesce(ops), [del('b'), marker, set('a', '2'), del('c')]);
    const endsWithMarker = [set('a', '1'), set('a', '2'), marker];
    assert.equal(coalesce(endsWithMarker).at(-1), marker);
  });

  test('the surviving op is the very object passed in', () => {
    const last = set('a', '3');
    const out = coalesce([set('a', '1'), set('a', '2'), last]);
    assert.equal(out.length, 1);
    assert.equal(out[0], last);
  });

  test('keys are compared by bytes, not by Buffer identity or text decoding', () => {
    const latin1E = { ...set('x', 'latin1'), key: Buffer.from([0xe9]) };
    const utf8E = { ...set('x', 'utf8'), key: Buffer.from('é') };
    const bin1 = { ...set('x', 'bin1'), key: Buffer.from([0xff, 0x00]) };
    const bin2 = { ...set('x', 'bin2'), key: Buffer.from([0xff, 0x00]) };
    const bad1 = { ...set('x', 'bad1'), key: Buffer.from([0xff]) };
    const bad2 = { ...set('x', 'bad2'), key: Buffer.from([0xfe]) };
    const out = coalesce([latin1E, utf8E, bin1, bad1, bad2, bin2]);
    assert.deepEqual(
      out.map((o) => (o as SetOp).value.toString()),
      ['latin1', 'utf8', 'bad1', 'bad2', 'bin2'],
    );
  });

  test('no ops, no duplicates', () => {
    assert.deepEqual(coalesce([]), []);
    const ops = [set('a', '1'), del('b'), set('c', '1')];
    assert.deepEqual(coalesce(ops), ops);
  });
});

describe('toWrite', () => {
  test('a delete stays a delete', () => {
    assert.deepEqual(toWrite(del('k'), NOW), { kind: 'delete', key: Buffer.from('k') });
  });

  test('expiresAt 0 stays 0 (never)', () => {
    assert.deepEqual(toWrite(set('k', 'v', 0), NOW), { kind: 'set', key: Buffer.from('k'), value: Buffer.from('v'), exptime: 0 });
  });

  test('an expired set becomes a delete', () => {
    assert.deepEqual(toWrite(set('k', 'v', NOW - 1), NOW), { kind: 'delete', key: Buffer.from('k') });
    assert.deepEqual(toWrite(set('k', 'v', NOW), NOW), { kind: 'delete', key: Buffer.from('k') });
    assert.deepEqual(toWrite(set('k', 'v', 2_592_001), NOW), { kind: 'delete', key: Buffer.from('k') });
  });

  test('the remaining time is sent relative, rounded up', () => {
    assert.equal((toWrite(set('k', 'v', NOW + 100), NOW) as { exptime: number }).exptime, 100);
    assert.equal((toWrite(set('k', 'v', NOW + 10), NOW + 0.25) as { exptime: number }).exptime, 10);
    assert.equal((toWrite(set('k', 'v', NOW + 1), NOW + 0.999) as { exptime: number }).exptime, 1);
    assert.equal((toWrite(set('k', 'v', NOW + 2_592_000), NOW) as { exptime: number }).exptime, 2_592_000);
  });

  test('a remaining time beyond 30 days is sent as the absolute unix time', () => {
    assert.deepEqual(toWrite(set('k', 'v', NOW + 2_592_001), NOW), { kind: 'set', key: Buffer.from('k'), value: Buffer.from('v'), exptime: NOW + 2_592_001 });
    assert.equal((toWrite(set('k', 'v', NOW + 2_592_000), NOW - 0.5) as { exptime: number }).exptime, NOW + 2_592_000);
    assert.equal((toWrite(set('k', 'v', 4_294_967_295), NOW) as { exptime: number }).exptime, 4_294_967_295);
  });
});

describe('OpApplier and server channels', () => {
  test('no ops: nothing is written', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:11211');
    await (await setup([w])).applier.apply([]);
    assert.equal(w.calls.length, 0);
  });

  test('every server of the route gets every (coalesced) op, in order, once', { timeout: 2_000 }, async () => {
    const writers = [new FakeWriter('m1:11211'), new FakeWriter('m2:11211'), new FakeWriter('m3:11211')];
    const { applier, refusals } = await setup(writers);
    await applier.apply([set('a', '1', NOW + 60), del('b'), set('c', '1'), set('a', '2', NOW + 30)]);
    for (const w of writers) assert.deepEqual(w.shown, [['delete b', 'set c=1@0', 'set a=2@30']], w.address);
    assert.deepEqual(refusals, []);
  });

  test('ops said to be distinct already are sent as they are, without a second coalescing pass', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:11211');
    const { applier } = await setup([w]);
    // Not distinct, which only shows that nothing was dropped: the worker passes true only for
    // jobs whose producer coalesced them.
    await applier.apply([set('a', '1'), set('a', '2')], true);
    assert.deepEqual(w.shown, [['set a=1@0', 'set a=2@0']]);
  });

  test('createRoute("replicate") hands every op to every server', () => {
    const route = createRoute({ routing: 'replicate', servers: ['a:1', 'b:1', 'c:1'] });
    assert.equal(route.name, 'replicate');
    const ops = [set('a', '1'), del('b')];
    assert.deepEqual(route.assign(ops, new Set([1])), [ops, ops, ops]);
  });

  test('a server that fails has its ops kept (before the job completes), and the job completes on the others', { timeout: 2_000 }, async () => {
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const good = new FakeWriter('good:1');
    const { applier, channels, missed, saved } = await setup([bad, good]);
    bad.up = false; // the probe fails too: it stays down
    await applier.apply([set('a', '1'), set('b', '1')]);
    assert.equal(channels[0]!.health, 'down');
    assert.equal(await missed[0]!.count(), 2, 'kept by the time the job completes');
    assert.equal(saved.get('bad:1')!.at(-1)!.health, 'down');
    assert.deepEqual(good.shown, [['set a=1@0', 'set b=1@0']]);
    // Later jobs go straight to the missed ops of the down server: no writes, no waiting.
    await applier.apply([set('a', '2'), del('c')]);
    assert.equal(bad.calls.length, 1);
    assert.equal(await missed[0]!.count(), 3, 'a coalesced with its newer op');
    assert.equal(good.calls.length, 2);
  });

  test('when the server returns (same process), its missed ops are replayed, last op per key, and it is healthy again', { timeout: 2_000 }, async () => {
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const good = new FakeWriter('good:1');
    const { applier, channels, missed, saved, warmed } = await setup([bad, good]);
    bad.up = false;
    await applier.apply([set('a', '1'), set('b', '1')]);
    await applier.apply([set('a', '2'), del('b'), set('c', '3')]);
    bad.script = (ops) => ops.map(() => OK);
    bad.up = true;
    await channels[0]!.whenHealthy();
    assert.deepEqual(bad.calls.slice(1).map((c) => c.map(show)), [['set a=2@0', 'delete b', 'set c=3@0']]);
    assert.equal(bad.flushes, 0, 'same process, nothing dropped: no flush');
    assert.deepEqual(warmed, [], 'and no warm: it kept its data');
    await until(() => saved.get('bad:1')!.at(-1)!.health === 'healthy');
    assert.equal(await missed[0]!.count(), 0);
    await applier.apply([set('d', '4')]);
    assert.deepEqual(bad.calls.at(-1)!.map(show), ['set d=4@0'], 'written directly again');
  });

  test('a server that restarted (new pid) is warmed from a peer, then gets its missed ops', { timeout: 2_000 }, async () => {
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels, warmed } = await setup([bad, new FakeWriter('good:1')]);
    bad.up = false;
    await applier.apply([set('a', '1')]);
    bad.id = { pid: 200, startedAt: 5_000 };
    bad.script = (ops) => ops.map(() => OK);
    bad.up = true;
    await channels[0]!.whenHealthy();
    assert.deepEqual(bad.log, ['set a=1@0', 'WARM', 'set a=1@0'], 'empty already: no flush');
    assert.deepEqual(warmed, ['bad:1']);
    assert.equal(channels[0]!.stats.restarts, 1);
  });

  test('more missed ops than the bound: they are dropped, and the server is flushed on return', { timeout: 2_000 }, async () => {
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels } = await setup([bad, new FakeWriter('good:1')], { missedMaxKeys: 3 });
    bad.up = false;
    await applier.apply([set('a', '1'), set('b', '1'), set('c', '1')]);
    await applier.apply([set('d', '1')]);
    assert.equal(channels[0]!.stats.overflows, 1);
    await applier.apply([set('e', '1')]);
    bad.script = (ops) => ops.map(() => OK);
    bad.up = true;
    await channels[0]!.whenHealthy();
    // Flushed (so no older value survives), warmed, then only what came after the overflow.
    assert.deepEqual(bad.log.slice(3), ['FLUSH', 'WARM', 'set e=1@0']);
  });

  /** A writer whose writes fail (as a down server's) until `script` is changed. */
  const failing = (address: string) => new FakeWriter(address, (ops) => ops.map(() => TRANSIENT));
  const healthyAgain = (w: FakeWriter) => {
    w.script = (ops) => ops.map(() => OK);
    w.up = true;
  };

  test('a restarted server whose only peer is down waits for that peer (it may hold every key), then warms from it', { timeout: 2_000 }, async () => {
    const a = failing('a:1');
    const b = failing('b:1');
    const { applier, channels, sources } = await setup([a, b], { warmWaitMs: 60_000 });
    a.script = (ops) => ops.map(() => OK);
    b.up = false;
    await applier.apply([set('k', '1')]); // b is down; a took it
    a.script = (ops) => ops.map(() => TRANSIENT);
    a.up = false;
    const pending = applier.apply([set('k', '2')]); // both down: the job waits
    await until(() => channels[0]!.health !== 'healthy');
    // a comes back restarted (empty) while b is still down.
    a.id = { pid: 200, startedAt: 5_000 };
    healthyAgain(a);
    await until(() => channels[0]!.health === 'recovering');
    await sleep(20);
    assert.equal(channels[0]!.health, 'recovering', 'not healthy while it has nothing to copy from');
    assert.deepEqual(sources, []);
    healthyAgain(b);
    await pending;
    await channels[0]!.whenHealthy();
    assert.deepEqual(sources, ['a:1<-b:1'], 'warmed from b once b is back');
    assert.equal(channels[0]!.complete, true);
    assert.equal(channels[1]!.complete, true, 'b only paused: it kept its keys');
  });

  test('after warmWaitMs a restarted server starts empty, and is warmed again once a complete peer is healthy', { timeout: 2_000 }, async () => {
    const a = failing('a:1');
    const b = failing('b:1');
    const { applier, channels, sources, saved } = await setup([a, b], { warmWaitMs: 0 });
    a.up = b.up = false;
    const pending = applier.apply([set('k', '1')]);
    await until(() => channels.every((c) => c.health !== 'healthy'));
    a.id = { pid: 200, startedAt: 5_000 };
    healthyAgain(a);
    await pending;
    await channels[0]!.whenHealthy();
    assert.equal(channels[0]!.complete, false, 'empty: nothing to copy from');
    await until(() => saved.get('a:1')!.at(-1)!.complete === false);
    assert.equal(saved.get('a:1')!.at(-1)!.health, 'healthy');
    assert.deepEqual(sources, []);
    healthyAgain(b);
    await until(() => sources.length === 1 && channels[0]!.health === 'healthy');
    assert.deepEqual(sources, ['a:1<-b:1'], 'warmed again from b when b was healthy');
    assert.equal(channels[0]!.complete, true);
    await until(() => saved.get('a:1')!.at(-1)!.complete === undefined);
    assert.deepEqual(a.log, ['set k=1@0', 'set k=1@0', 'WARM'], 'the failed write, its replay when it started empty, the later copy');
  });

  test('one server restarts while its peer is down, then the peer restarts: the keys survive on one of them', { timeout: 2_000 }, async () => {
    // What the chaos run found: a starts empty while b is paused; later b restarts and is warmed
    // from a. a must have waited for (or been warmed again from) b, or both end up empty.
    const a = failing('a:1');
    const b = failing('b:1');
    const { applier, channels, sources } = await setup([a, b], { warmWaitMs: 60_000 });
    a.up = b.up = false;
    const pending = applier.apply([set('k', '1')]);
    await until(() => channels.every((c) => c.health !== 'healthy'));
    a.id = { pid: 200, startedAt: 5_000 };
    healthyAgain(a);
    await until(() => channels[0]!.health === 'recovering'); // a back, waiting for b
    healthyAgain(b);
    await pending;
    await channels[0]!.whenHealthy();
    await channels[1]!.whenHealthy();
    b.script = (ops) => ops.map(() => TRANSIENT);
    b.up = false;
    await applier.apply([set('k', '2')]);
    b.id = { pid: 300, startedAt: 6_000 };
    healthyAgain(b);
    await until(() => sources.length === 2 && channels[1]!.health === 'healthy');
    assert.deepEqual(sources, ['a:1<-b:1', 'b:1<-a:1']);
    assert.ok(channels.every((c) => c.complete), 'each was warmed from a complete peer');
  });

  test('a rewarm asked for while the server finishes its recovery (saving its state) still happens', { timeout: 2_000 }, async () => {
    // The recovery loop is still running (awaiting the save of its healthy state) when the
    // complete peer comes back and asks for a rewarm: the loop must run again, not leave the
    // server down with nothing to bring it back.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = false;
    const a = failing('a:1');
    const b = failing('b:1');
    const store = {
      save: async (address: string, st: SavedServerState) => {
        if (address === 'a:1' && st.health === 'healthy' && st.complete === false && !held) {
          held = true;
          await gate;
        }
      },
    };
    const { applier, channels, sources } = await setup([a, b], { warmWaitMs: 0, store });
    a.up = b.up = false;
    const pending = applier.apply([set('k', '1')]);
    await until(() => channels.every((c) => c.health !== 'healthy'));
    a.id = { pid: 200, startedAt: 5_000 };
    healthyAgain(a);
    await until(() => held); // a is healthy (empty, incomplete), its recovery saving that
    healthyAgain(b);
    await until(() => channels[1]!.health === 'healthy');
    assert.equal(channels[0]!.health, 'down', 'the rewarm took it out of service');
    release();
    await pending;
    await until(() => sources.length === 1 && channels[0]!.health === 'healthy');
    assert.deepEqual(sources, ['a:1<-b:1']);
    assert.equal(channels[0]!.complete, true);
  });

  test('two servers that both restarted do not wait for each other: both start (incomplete)', { timeout: 2_000 }, async () => {
    const a = failing('a:1');
    const b = failing('b:1');
    const { applier, channels } = await setup([a, b], { warmWaitMs: 60_000 });
    a.up = b.up = false;
    const pending = applier.apply([set('k', '1')]);
    await until(() => channels.every((c) => c.health !== 'healthy'));
    a.id = { pid: 200, startedAt: 5_000 };
    b.id = { pid: 300, startedAt: 6_000 };
    healthyAgain(a);
    healthyAgain(b);
    await pending;
    await channels[0]!.whenHealthy();
    await channels[1]!.whenHealthy();
    assert.deepEqual(channels.map((c) => c.complete), [false, false], 'no peer held the keys');
  });

  test('a server that restarted while no worker ran (its identity differs from the saved one) is warmed before use', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:1');
    const { applier, channels, sources } = await setup([w, new FakeWriter('m2:1')], {}, { 'm1:1': { health: 'healthy', mustFlush: false, identity: { pid: 1, startedAt: 1 } } });
    await applier.apply([set('a', '1')]);
    await channels[0]!.whenHealthy();
    assert.deepEqual(sources, ['m1:1<-m2:1']);
    assert.deepEqual(w.log, ['WARM', 'set a=1@0']);
    assert.equal(channels[0]!.stats.restarts, 1);
  });

  test('a server a previous worker left incomplete is warmed at start from a complete healthy peer', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:1');
    const { channels, sources } = await setup([w, new FakeWriter('m2:1')], {}, { 'm1:1': { health: 'healthy', mustFlush: false, complete: false } });
    await until(() => sources.length === 1 && channels[0]!.health === 'healthy');
    assert.deepEqual(sources, ['m1:1<-m2:1']);
    assert.equal(channels[0]!.complete, true);
  });

  test('a server with no saved state, in a data center that applied ops before, is not complete: warmed from the complete peer, never its source', { timeout: 2_000 }, async () => {
    const known: SavedServerState = { health: 'healthy', mustFlush: false, identity: { pid: 100, startedAt: 1_000 } };
    const fresh = new FakeWriter('new:1');
    const { channels, sources } = await setup([new FakeWriter('m1:1'), fresh], {}, { 'm1:1': known }, true);
    await until(() => sources.length === 1 && channels[1]!.health === 'healthy');
    assert.deepEqual(sources, ['new:1<-m1:1'], 'the new server is warmed from the known one');
    assert.equal(channels[1]!.complete, true, 'complete once warmed from a complete peer');

  });

  test('a known server that restarts empty while its only healthy peer is a new, unwarmed server stays incomplete after copying it', { timeout: 2_000 }, async () => {
    const m1 = new FakeWriter('m1:1');
    m1.up = false; // down when the worker starts: the new server has nobody to be warmed from
    const { channels, sources } = await setup([m1, new FakeWriter('new:1')], { warmWaitMs: 0 }, { 'm1:1': { health: 'healthy', mustFlush: false, identity: { pid: 100, startedAt: 1_000 } } }, true);
    await until(() => channels[1]!.health === 'healthy');
    assert.equal(channels[1]!.complete, false, 'the new server is not assumed complete');
    m1.id = { pid: 101, startedAt: 2_000 }; // it comes back restarted, empty
    m1.up = true;
    await until(() => channels[0]!.health === 'healthy');
    assert.deepEqual(sources, ['m1:1<-new:1']);
    assert.deepEqual(channels.map((c) => c.complete), [false, false], 'a copy of an empty server never makes one complete');
  });

  test('in a new data center (nothing applied yet) a server with no saved state is complete: it sees the stream from its start', { timeout: 2_000 }, async () => {
    const { channels, sources } = await setup([new FakeWriter('m1:1'), new FakeWriter('m2:1')]);
    assert.deepEqual(channels.map((c) => c.complete), [true, true]);
    assert.deepEqual(sources, []);
  });

  test('a server a previous worker left needing a flush is flushed and warmed before its first write', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:1');
    const { applier, channels } = await setup([w, new FakeWriter('m2:1')], {}, { 'm1:1': { health: 'down', mustFlush: true } });
    await applier.apply([set('a', '1')]);
    await channels[0]!.whenHealthy();
    assert.deepEqual(w.log, ['FLUSH', 'WARM', 'set a=1@0']);
  });

  test('missed ops a previous worker kept are replayed by the next one', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:1');
    const missed = new MemoryMissedOpStore();
    await missed.add([set('k', 'kept-by-the-dead-worker')]);
    const { channels } = await setup([w, new FakeWriter('m2:1')], { missed }, { 'm1:1': { health: 'down', mustFlush: false } });
    await channels[0]!.whenHealthy();
    assert.deepEqual(w.log, ['set k=kept-by-the-dead-worker@0']);
  });

  test('ops arriving while a server replays a small backlog wait for it, then are written directly after the older ones', { timeout: 2_000 }, async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels, missed } = await setup([bad, new FakeWriter('good:1')]);
    bad.up = false;
    await applier.apply([set('k', 'old')]);
    // The replay's write is held until we release it.
    bad.script = async (ops) => {
      await gate;
      return ops.map(() => OK);
    };
    bad.up = true;
    await until(() => bad.calls.length === 2);
    assert.equal(channels[0]!.health, 'recovering');
    let applied = false;
    const late = applier.apply([set('k', 'new')]).then(() => (applied = true));
    await nextTurn();
    assert.equal(applied, false, 'the job waits for the replay of the backlog');
    assert.equal(await missed[0]!.count(), 1, 'the new op did not join the store (only the one being replayed is there)');
    release();
    await late;
    assert.equal(channels[0]!.health, 'healthy');
    assert.deepEqual(bad.log, ['set k=old@0', 'set k=old@0', 'set k=new@0']);
    assert.equal(await missed[0]!.count(), 0);
  });

  test('ops arriving while a server replays a backlog of more than two batches join the store and are replayed after the older ones', { timeout: 5_000 }, async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels, missed } = await setup([bad, new FakeWriter('good:1')]);
    bad.up = false;
    const backlog = Array.from({ length: 12_000 }, (_, i) => set(`k${i}`, 'old'));
    await applier.apply(backlog);
    bad.script = async (ops) => {
      await gate;
      return ops.map(() => OK);
    };
    bad.up = true;
    await until(() => bad.calls.length === 2);
    assert.equal(bad.calls[1]!.length, 5_000, 'a full first batch');
    await applier.apply([set('k11999', 'new')]); // not held: it joins the store
    assert.equal(await missed[0]!.count(), 12_000, 'still 12,000 keys kept, k11999 now with its newer op');
    release();
    await channels[0]!.whenHealthy();
    const writesOf = bad.log.filter((l) => l.startsWith('set k11999='));
    assert.deepEqual(writesOf, ['set k11999=old@0', 'set k11999=new@0'], 'the failed write, then only the newest op of the key (coalesced in the store)');
    assert.equal(await missed[0]!.count(), 0);
  });

  test('with every server down, a job waits (its ops stay queued) until one is back', { timeout: 2_000 }, async () => {
    const a = new FakeWriter('a:1', (ops) => ops.map(() => TRANSIENT));
    const b = new FakeWriter('b:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels, missed } = await setup([a, b]);
    a.up = b.up = false;
    await applier.apply([set('x', '1')]); // both fail during this job: kept for both
    let done = false;
    const waiting = applier.apply([set('y', '2')]).then(() => (done = true));
    await nextTurn();
    await nextTurn();
    assert.equal(done, false, 'no healthy server: the job waits');
    assert.equal(await missed[0]!.count(), 1, 'its ops stay queued, not piled up in memory');
    a.script = (ops) => ops.map(() => OK);
    a.up = true;
    await waiting;
    assert.deepEqual(a.log, ['set x=1@0', 'set x=1@0', 'set y=2@0']);
    assert.equal(channels[1]!.health, 'down');
    assert.equal(await missed[1]!.count(), 2, 'the other server keeps both for its return');
  });

  test('a permanent refusal is dead-lettered, and a refused set deletes the key on that server', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:11211', (ops) => ops.map((o) => (keyOf(o) === 'big' && o.kind === 'set' ? tooLarge : OK)));
    const other = new FakeWriter('m2:11211');
    const { applier, refusals } = await setup([w, other]);
    const big = set('big', 'x'.repeat(100));
    await applier.apply([set('a', '1'), big, del('c')]);
    assert.deepEqual(w.shown, [['set a=1@0', `set big=${'x'.repeat(100)}@0`, 'delete c'], ['delete big']]);
    assert.deepEqual(other.shown, [['set a=1@0', `set big=${'x'.repeat(100)}@0`, 'delete c']]);
    assert.deepEqual(refusals, [{ op: big, server: 'm1:11211', reason: 'Value too large', keyDeleted: true }]);
  });

  test('a delete refused for good is dead-lettered once, not retried', { timeout: 2_000 }, async () => {
    const w = new FakeWriter('m1:1', (ops) => ops.map(() => ({ ok: false, retriable: false, error: 'Invalid arguments' })));
    const { applier, refusals } = await setup([w]);
    await applier.apply([set('s', '1')]);
    assert.deepEqual(w.calls.map((c) => c.map((o) => o.kind)), [['set'], ['delete']]);
    assert.deepEqual(refusals.map((r) => [r.op.kind, r.keyDeleted]), [['set', true], ['delete', false]]);
  });

  test('a kept set past its expiry is replayed as a delete', { timeout: 2_000 }, async () => {
    let now = NOW;
    const bad = new FakeWriter('bad:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, channels } = await setup([bad, new FakeWriter('good:1')], { now: () => now });
    bad.up = false;
    await applier.apply([set('k', 'v', NOW + 5)]);
    now = NOW + 6;
    bad.script = (ops) => ops.map(() => OK);
    bad.up = true;
    await channels[0]!.whenHealthy();
    assert.deepEqual(bad.log, ['set k=v@5', 'delete k']);
  });

  test('abort: a job waiting for a healthy server rejects with the abort reason', { timeout: 2_000 }, async () => {
    const a = new FakeWriter('a:1', (ops) => ops.map(() => TRANSIENT));
    const { applier, controller } = await setup([a]);
    a.up = false;
    await applier.apply([set('x', '1')]);
    const waiting = applier.apply([set('y', '1')]);
    controller.abort(new Error('shutting down'));
    await assert.rejects(waiting, /shutting down/);
  });
});

describe('OpApplier with a ketama route', () => {
  test('the keys of a server that goes down during a job, and after, are also deleted where readers that eject it read them', { timeout: 5_000 }, async () => {
    const writers = ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'].map((a) => new FakeWriter(a));
    const route = createRoute(datacenterSchema.parse({ routing: 'ketama', servers: writers.map((w) => w.address) }));
    const { applier, missed } = await setup(writers, { route });
    const full = new KetamaRing(writers.map((w) => ({ address: w.address, weight: 1 })), 'fnv1a_64');
    const without1 = new KetamaRing([0, 2].map((i) => ({ address: writers[i]!.address, weight: 1 })), 'fnv1a_64');
    const down = writers[1]!;
    down.script = (ops) => ops.map(() => TRANSIENT);
    down.up = false;
    for (const round of ['during', 'after']) {
      const ops = Array.from({ length: 300 }, (_, i) => set(`${i}:${round}`, round));
      await applier.apply(ops, true);
      let moved = 0;
      for (const op of ops) {
        const key = op.key.toString();
        const owner = full.serverFor(op.key);
        const fallback = [0, 2][without1.serverFor(op.key)]!;
        if (owner !== 1) {
          assert.ok(writers[owner]!.log.includes(`set ${key}=${round}@0`));
          continue;
        }
        moved++;
        assert.ok(missed[1]!.map.has(key), `${key} kept for the server that is down`);
        assert.ok(writers[fallback]!.log.includes(`delete ${key}`), `${key} deleted on ${writers[fallback]!.address}, where readers look while ${down.address} is ejected`);
        assert.equal(writers[2 - fallback]!.log.some((l) => l.includes(` ${key}`)), false, 'and nowhere else');
      }
      assert.ok(moved > 50, `${moved} keys of the server that is down (${round})`);
    }
  });
});
