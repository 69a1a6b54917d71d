/**
 * Runs long-lived components (a tailer, data-center worker groups) until SIGTERM/SIGINT, which
 * drains them and exits 0. A component that fails for a reason that passes (it lost its lease,
 * e.g. Redis was unreachable too long) is replaced by a fresh one, which waits for the lease
 * and picks up from what Redis holds. Any other failure stops the others and exits non-zero.
 * SIGHUP reads the config again (see ComponentSpec.reload).
 */
import type { EventEmitter } from 'node:events';
import { errorMessage, McreplError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { limitHeapGrowth } from '../../observability/memory.js';
import type { ResolvedConfig } from '../../config/schema.js';
import { startMetricsServer, type MetricsServer } from '../../observability/metrics-server.js';
import { EXIT, reportError } from '../context.js';

export interface Component extends EventEmitter {
  start(): Promise<void>;
  close(): Promise<void>;
  /** Its lifecycle state, for /healthz and /readyz. */
  readonly state?: string;
}

export interface ComponentSpec {
  name: string;
  /** `attempt` is 0 for the first instance, then counts replacements. */
  create: (attempt: number) => Component;
  /** The config was read again (SIGHUP): what the running instance, and later ones, take from it. */
  reload?: (config: ResolvedConfig, running: Component | undefined) => void;
}

const isPassing = (err: unknown) => err instanceof McreplError && err.retriable;

export async function runDaemon(specs: ComponentSpec[], logger: Logger, opts: { heapGrowingPercent: number; reload?: () => ResolvedConfig; metrics?: { host: string; port?: number | undefined }; status?: () => Promise<unknown> }): Promise<number> {
  limitHeapGrowth(opts.heapGrowingPercent);
  let stopping = false;
  let exitCode: number = EXIT.ok;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const slots = specs.map((spec) => ({ spec, attempt: 0, current: undefined as Component | undefined }));

  const stopAll = async (code: number, why: string) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    logger.info({ why }, 'stopping');
    await Promise.allSettled(slots.map((s) => s.current?.close()));
    resolveDone();
  };

  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal: sig }, 'second signal: exiting without draining');
      process.exit(EXIT.failure);
    }
    void stopAll(EXIT.ok, sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // SIGHUP: the config is read again; each component takes what it can change while running
  // (a data center's servers), and a replacement starts with all of it.
  const onHangup = () => {
    if (stopping || !opts.reload) return;
    let config: ResolvedConfig;
    try {
      config = opts.reload();
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'SIGHUP: the config could not be read again; the running one is kept');
      return;
    }
    logger.info('SIGHUP: config read again');
    for (const slot of slots) slot.spec.reload?.(config, slot.current);
  };
  process.on('SIGHUP', onHangup);

  // An instance fails once: what its teardown throws afterwards (a start() still under way that
  // loses its connections, say) is a consequence, not a new failure.
  const failedInstances = new WeakSet<Component>();
  const failed = (slot: (typeof slots)[number], instance: Component, err: unknown) => {
    if (stopping || slot.current !== instance || failedInstances.has(instance)) return;
    failedInstances.add(instance);
    if (isPassing(err)) {
      const delay = Math.min(250 * 2 ** Math.min(slot.attempt, 5), 5_000);
      logger.warn({ component: slot.spec.name, err: errorMessage(err), restartInMs: delay }, 'component failed for a passing reason: replacing it');
      void instance.close().catch(() => undefined);
      setTimeout(() => void launch(slot), delay);
      return;
    }
    const code = reportError(err);
    void stopAll(code === EXIT.ok ? EXIT.failure : code, `${slot.spec.name} failed`);
  };

  const launch = async (slot: (typeof slots)[number]): Promise<void> => {
    if (stopping) return;
    const instance = slot.spec.create(slot.attempt++);
    slot.current = instance;
    instance.on('fatal', (err: Error) => failed(slot, instance, err));
    try {
      await instance.start();
    } catch (err) {
      failed(slot, instance, err);
    }
  };

  // Metrics and health over HTTP, from the start (a component still starting is not ready).
  let server: MetricsServer | undefined;
  if (opts.metrics?.port !== undefined) {
    server = await startMetricsServer(opts.metrics.host, opts.metrics.port, () => slots.map((s) => ({ name: s.spec.name, state: s.current?.state ?? 'created' })), opts.status);
    logger.info({ host: opts.metrics.host, port: server.port }, 'metrics, /healthz and /readyz served over HTTP');
  }

  // Workers first, so the tailer's first jobs find their consumers.
  for (const slot of slots) {
    if (stopping) break;
    await launch(slot);
  }
  if (!stopping) logger.info({ components: specs.map((s) => s.name) }, 'mcrepl ready');
  await done;
  await server?.close();
  logger.info({ exitCode }, 'stopped');
  return exitCode;
}
