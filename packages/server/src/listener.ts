// Listening: accept connections on an address and serve each (on this thread or
// on worker threads), within connection limits, until the server is closed.
import { type AddressInfo, createServer, type ListenOptions, type Server, type Socket } from 'node:net';
import { listenOptionsOf, type NbdAddress, peerOf } from '@nbd/node';
import { NbdInvalidArgumentError, parseNbdUri, tieToSignal } from '@nbd/protocol';
import { checkServe } from './check-serve.js';
import type { Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { admitted, serveAdmitted, tlsOf } from './serve.js';
import { type ConnectionOptions, connectionData, connectionHooks, connectionOptions, type ServeOptions } from './serve-options.js';
import { ThreadPool } from './threads.js';

/**
 * A server listening on an address (from {@link listen}). `close()` (or `await using`)
 * stops accepting, winds every connection down as a lame duck (in-flight and new
 * requests get ESHUTDOWN) and settles once they have all closed.
 */
export class NbdServer implements AsyncDisposable {
  private readonly stop = new AbortController();
  private readonly connections = new Set<Promise<void>>();
  private pool: ThreadPool | undefined;
  private readonly done = Promise.withResolvers<void>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    /** Where it listens: a unix socket path, or the TCP address and port. */
    readonly address: string | AddressInfo,
  ) {}

  /** Connections being served now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Settles once the server is closed and every connection has closed. */
  get closed(): Promise<void> {
    return this.done.promise;
  }

  /** Stops accepting and closes every connection (lame duck); settles when they are gone. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stop.abort();
      const listening = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.pool?.shutdown();
      while (this.connections.size > 0) await Promise.all([...this.connections]);
      await listening;
      await this.pool?.close();
      this.done.resolve();
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal */
  static async start(address: NbdAddress | ListenOptions, exports: readonly Export[], opts: ServeOptions): Promise<NbdServer> {
    checkServe(exports, opts);
    const logger = opts.logger ?? silentLogger;
    const listenOpts = listenOptionsOf(address);
    if ((typeof address === 'string' || address instanceof URL) && parseNbdUri(String(address)).tls && opts.tls === undefined) {
      throw new NbdInvalidArgumentError(`listen: ${String(address)} asks for TLS; give ServeOptions.tls`);
    }
    // Credentials are read once for every connection (workers read their own).
    if (opts.tls !== undefined && !opts.threads) opts = { ...opts, tls: await tlsOf(opts) };
    const pool = opts.threads ? await ThreadPool.start(opts.threads, exports, opts, logger) : undefined;
    const server = createServer({ noDelay: true, pauseOnConnect: true });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listenOpts, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      await pool?.close();
      throw e;
    }
    const self = new NbdServer(server, server.address()!);
    self.pool = pool;
    self.accept(exports, opts, logger);
    const where = self.address;
    logger.info(`listening on ${typeof where === 'string' ? where : `${where.address}:${where.port}`}`);
    opts.onListen?.(where);
    server.on('error', (e) => logger.error(`listener error: ${e.message}`));
    tieToSignal(opts.signal, () => void self.close());
    return self;
  }

  private accept(exports: readonly Export[], opts: ServeOptions, logger: Logger): void {
    const admission = new Admission(opts, logger);
    // Connections wind down when the server closes, or when the caller's signal aborts.
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.stop.signal]) : this.stop.signal;
    // What connections on this thread are served with; workers build theirs the same way (serve-worker.ts).
    const conn = connectionOptions(connectionData(opts), connectionHooks(opts), signal, logger);
    this.server.on('connection', (socket: Socket) => {
      const leave = admission.enter(socket, this.connections.size);
      if (leave === undefined) return;
      const p = this.serveOne(socket, exports, conn)
        .catch((e: unknown) => logger.error(`connection failed: ${(e as Error).message}`))
        .finally(leave);
      this.connections.add(p);
      void p.finally(() => this.connections.delete(p));
    });
  }

  /** preconnect's first call, here for either mode; then this thread or a worker serves the connection. */
  private async serveOne(socket: Socket, exports: readonly Export[], conn: ConnectionOptions): Promise<void> {
    if (!(await admitted(peerOf(socket), conn.preconnect, conn.logger)) || this.stop.signal.aborted) socket.destroy();
    else if (this.pool) await this.pool.hand(socket);
    else await serveAdmitted(socket, exports, conn);
  }
}

/**
 * Listens on `address` (an NBD URI as a string or URL, `{ path }`, `{ host, port }` or
 * net ListenOptions) and serves every connection; resolves once listening.
 * Close it with `close()`, `await using`, or `opts.signal`.
 */
export function listen(address: NbdAddress | ListenOptions, exports: readonly Export[], opts: ServeOptions = {}): Promise<NbdServer> {
  return NbdServer.start(address, exports, opts);
}

/**
 * Listens on `address` and serves every connection. Settles once `opts.signal`
 * aborted and every connection closed; rejects if listening fails.
 */
export async function listenAndServe(
  address: NbdAddress | ListenOptions,
  exports: readonly Export[],
  opts: ServeOptions = {},
): Promise<void> {
  const server = await listen(address, exports, opts);
  await server.closed;
}

/** Connection limits of a listener: in all, and per remote address. */
class Admission {
  private readonly perClient = new Map<string, number>();
  private readonly max: number;
  private readonly maxPerClient: number;

  constructor(
    opts: ServeOptions,
    private readonly logger: Logger,
  ) {
    this.max = opts.maxConnections ?? 10_000;
    this.maxPerClient = opts.maxConnectionsPerClient ?? 1000;
  }

  /** Admits `socket` (the function to call when it leaves), or closes it and returns undefined. */
  enter(socket: Socket, open: number): (() => void) | undefined {
    if (open >= this.max) {
      this.logger.warn(`connection refused: ${open} connections already (maxConnections)`);
      socket.destroy();
      return undefined;
    }
    const address = socket.remoteAddress;
    if (address === undefined) return () => {};
    const n = this.perClient.get(address) ?? 0;
    if (n >= this.maxPerClient) {
      this.logger.warn(`connection refused: ${n} connections from ${address} already (maxConnectionsPerClient)`);
      socket.destroy();
      return undefined;
    }
    this.perClient.set(address, n + 1);
    return () => {
      const left = (this.perClient.get(address) ?? 1) - 1;
      if (left > 0) this.perClient.set(address, left);
      else this.perClient.delete(address);
    };
  }
}
