// Serving on worker threads (ServeOptions.threads): the main thread accepts and
// admits connections, then hands each socket to the least busy worker, which runs
// the handshake and transmission with its own handles on the exports' devices
// (Device.share). Each worker is a separate JavaScript thread, so connections are
// served on several cores, as nbdkit's threads are. A worker serves each connection
// with the options the main thread would (serve-options.ts): the same data, and the
// hooks called on the main thread (thread-hooks.ts).
import type { Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { type ServerTlsOptions, takeDescriptor } from '@nbd/node';
import { libc } from '@nbd/node/internal';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { DeviceRecipe, Export } from './device.js';
import type { Logger } from './logger.js';
import { type ConnectionData, connectionData, connectionHooks, type HookKey, type ServeOptions } from './serve-options.js';
import { type HookCall, HookHost, type HookRelease, type HookResult } from './thread-hooks.js';

/** What a worker needs to serve: the exports with recipes instead of devices, every per-connection option. */
export interface WorkerSetup {
  exports: { name: string; description?: string; size: number; readOnly?: boolean; tlsOnly?: boolean; recipe: DeviceRecipe }[];
  /** ServeOptions' per-connection data (connectionData), with `tls` as options: each worker loads them. */
  data: ConnectionData & { tls?: ServerTlsOptions };
  /** Which hooks the main thread runs for the worker's connections. */
  hooks: Record<HookKey, boolean>;
  /** Forward log lines to the main thread's logger. */
  log: boolean;
}

export type ToWorker = { type: 'serve'; id: number; fd: number } | { type: 'shutdown' } | { type: 'exit' } | HookResult;
export type FromWorker =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'closed'; id: number }
  | { type: 'log'; level: keyof Logger; message: string }
  | HookCall
  | HookRelease;

/** Grace for a worker to close its devices and exit before it is terminated. */
const EXIT_GRACE_MS = 5000;

/** Every field of Export but the device, so a new field cannot be left behind (the compiler checks). */
const exportFields = { name: true, description: true, size: true, readOnly: true, tlsOnly: true } as const satisfies Record<
  Exclude<keyof Export, 'device'>,
  true
>;

/** What a worker gets of `e`: every field, and the device as its recipe. */
function workerExport(e: Export): WorkerSetup['exports'][number] {
  if (typeof e.device.share !== 'function') {
    throw new NbdInvalidArgumentError(`serve: threads need shareable devices; export "${e.name}" has no share()`);
  }
  const out: Record<string, unknown> = { recipe: e.device.share() };
  for (const key of Object.keys(exportFields) as (keyof typeof exportFields)[]) if (e[key] !== undefined) out[key] = e[key];
  return out as WorkerSetup['exports'][number];
}

/** @internal The setup every worker gets: built from ServeOptions by connectionData, as this thread's connections are. */
export function workerSetup(exports: readonly Export[], opts: ServeOptions, hooks: Record<HookKey, boolean>): WorkerSetup {
  const data = connectionData(opts);
  if (data.tls !== undefined && 'accept' in data.tls) {
    throw new NbdInvalidArgumentError('serve: with threads, give tls as options (each worker loads them), not prepared by serverTls()');
  }
  return { exports: exports.map(workerExport), data: data as WorkerSetup['data'], hooks, log: opts.logger !== undefined };
}

class Thread {
  readonly worker: Worker;
  /** Connections served, by id: settled when the worker reports them closed (or dies). */
  readonly connections = new Map<number, PromiseWithResolvers<void>>();
  readonly ready = Promise.withResolvers<void>();
  exited = false;

  constructor(url: URL, setup: WorkerSetup, logger: Logger, host: HookHost, onDeath: (t: Thread, why: string) => void) {
    this.worker = new Worker(url, { workerData: setup });
    this.worker.on('message', (m: FromWorker) => {
      if (m.type === 'ready') this.ready.resolve();
      else if (m.type === 'failed') this.ready.reject(new Error(m.message));
      else if (m.type === 'closed') {
        host.drop(this, m.id);
        this.connections.get(m.id)?.resolve();
        this.connections.delete(m.id);
      } else if (m.type === 'call') {
        void host.answer(this, m).then((r) => {
          if (this.exited)
            host.drop(this); // a device opened for a worker that is gone
          else this.worker.postMessage(r satisfies ToWorker);
        });
      } else if (m.type === 'release') host.release(m.handle);
      else logger[m.level](m.message);
    });
    this.worker.on('error', (e) => onDeath(this, e.message));
    this.worker.on('exit', (code) => onDeath(this, `exit code ${code}`));
  }

  /** Every connection this thread had is gone (it died or exited). */
  dropAll(host: HookHost): void {
    this.exited = true;
    host.drop(this);
    for (const c of this.connections.values()) c.resolve();
    this.connections.clear();
    this.ready.reject(new Error('worker thread exited while starting'));
  }
}

export class ThreadPool {
  private readonly threads: Thread[] = [];
  private nextId = 0;
  private started = false;
  private stopping = false;

  private constructor(
    private readonly setup: WorkerSetup,
    private readonly host: HookHost,
    private readonly logger: Logger,
  ) {}

  /** Starts `count` workers and waits until each has opened every export's device. */
  static async start(count: number, exports: readonly Export[], opts: ServeOptions, logger: Logger): Promise<ThreadPool> {
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new NbdInvalidArgumentError(`serve: threads must be a positive integer, got ${count}`);
    }
    const host = new HookHost(connectionHooks(opts), exports, logger);
    const setup = workerSetup(exports, opts, host.present);
    if (process.platform !== 'linux')
      throw new NbdInvalidArgumentError(`serve: threads are supported on Linux only, not ${process.platform}`);
    libc(); // sockets reach workers as dup(2)ed descriptors: a missing koffi fails now, not at the first client
    const pool = new ThreadPool(setup, host, logger);
    for (let i = 0; i < count; i++) pool.threads.push(pool.spawn());
    try {
      await Promise.all(pool.threads.map((t) => t.ready.promise));
    } catch (e) {
      await pool.close();
      throw e;
    }
    pool.started = true;
    return pool;
  }

  /** Hands `socket` to the least busy worker; settles once the worker has closed the connection. */
  hand(socket: Socket): Promise<void> {
    const live = this.threads.filter((t) => !t.exited);
    if (live.length === 0 || this.stopping) {
      socket.destroy();
      return Promise.resolve();
    }
    const thread = live.reduce((a, b) => (b.connections.size < a.connections.size ? b : a));
    let fd: number;
    try {
      fd = takeDescriptor(socket);
    } catch (e) {
      this.logger.error(`serve: cannot hand a connection to a worker: ${(e as Error).message}`);
      return Promise.resolve();
    }
    const id = this.nextId++;
    const done = Promise.withResolvers<void>();
    thread.connections.set(id, done);
    thread.worker.postMessage({ type: 'serve', id, fd } satisfies ToWorker);
    return done.promise;
  }

  /** Lame duck on every worker: in-flight and new requests get ESHUTDOWN, then connections close. */
  shutdown(): void {
    this.stopping = true;
    for (const t of this.threads) if (!t.exited) t.worker.postMessage({ type: 'shutdown' } satisfies ToWorker);
  }

  /** Asks each worker to close its devices and exit; terminates one that does not. */
  async close(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.threads.map(async (t) => {
        if (t.exited) return;
        const gone = new Promise<void>((resolve) => t.worker.once('exit', () => resolve()));
        t.worker.postMessage({ type: 'exit' } satisfies ToWorker);
        const timer = setTimeout(() => void t.worker.terminate(), EXIT_GRACE_MS);
        await gone;
        clearTimeout(timer);
      }),
    );
  }

  private spawn(): Thread {
    return new Thread(new URL('./serve-worker.js', import.meta.url), this.setup, this.logger, this.host, (t, why) => this.died(t, why));
  }

  /** A worker that dies while serving loses its connections; a new one takes its place. */
  private died(t: Thread, why: string): void {
    if (t.exited) return;
    t.dropAll(this.host);
    if (!this.started || this.stopping) return;
    this.logger.error(`serve: worker thread died (${why}); starting another`);
    const i = this.threads.indexOf(t);
    const fresh = this.spawn();
    fresh.ready.promise.catch((e: unknown) => this.logger.error(`serve: replacement worker failed: ${(e as Error).message}`));
    this.threads[i] = fresh;
  }
}
