// Entry points: serve() runs one connected socket through greet → negotiate →
// transmit; listenAndServe() accepts connections until its signal aborts and
// settles only when every connection has closed.
import { type AddressInfo, type ListenOptions, type Server, type Socket, createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { Limits, parseNbdUri } from '@nbd/protocol';
import type { Device, Export } from './device.js';
import { FrameSource } from './frame-source.js';
import { type OpenContext, negotiate } from './handshake.js';
import { type Logger, silentLogger } from './logger.js';
import { RequestReader } from './request-reader.js';
import { ThreadPool } from './threads.js';
import { Transmission } from './transmission.js';

/** What `preconnect` learns about a client before the greeting. */
export interface ConnectionInfo {
  /** "host:port", the unix socket path, or "socket" when unknown. */
  clientAddress: string;
  remoteAddress?: string;
  remotePort?: number;
}

export interface ServeOptions {
  /** Aborting stops accepting, fails in-flight and new requests with ESHUTDOWN, then closes. */
  signal?: AbortSignal;
  /** Connections served at once (listenAndServe); more are closed before the greeting. Default unlimited. */
  maxConnections?: number;
  /** Milliseconds a client has to finish the handshake. Default 30 000. */
  handshakeTimeout?: number;
  /** Return false to close the connection before the greeting (nbdkit's preconnect). */
  preconnect?: (info: ConnectionInfo) => boolean | Promise<boolean>;
  /** A device per connection (nbdkit's open); closed with the connection. Default: the export's device. */
  open?: (ctx: OpenContext) => Device | Promise<Device>;
  /** Default: silent. `console` works. */
  logger?: Logger;
  /** Largest READ/WRITE payload, advertised in NBD_INFO_BLOCK_SIZE. Default 32 MiB. */
  maxPayload?: number;
  /** Requests in flight per connection before reading pauses. Default 256. */
  maxInFlight?: number;
  /** Request and reply bytes in flight per connection before reading pauses. Default 64 MiB. */
  maxInFlightBytes?: number;
  /** Serve every export read-only. */
  readOnly?: boolean;
  /**
   * listenAndServe: serve connections on this many worker threads (default 0: on
   * this thread). Every export's device needs `share()` (SharedMemoryDevice and
   * FileDevice have it); `open` is not supported. Linux only; loads koffi.
   */
  threads?: number;
  /** Called once the listener is up (listenAndServe), with its address. */
  onListen?: (address: string | AddressInfo) => void;
}

/** Grace for connections still negotiating when the server shuts down. */
const SHUTDOWN_GRACE_MS = 1000;

function checkExports(exports: readonly Export[]): void {
  if (exports.length === 0) throw new TypeError('serve: at least one export is needed');
  for (const e of exports) {
    if (!Number.isSafeInteger(e.size) || e.size < 0) throw new TypeError(`serve: export "${e.name}" has a bad size ${e.size}`);
    if (typeof e.device?.readAt !== 'function') throw new TypeError(`serve: export "${e.name}" has no device`);
  }
}

function describe(socket: Duplex): ConnectionInfo {
  const s = socket as Partial<Socket>;
  if (s.remoteAddress !== undefined) {
    return { clientAddress: `${s.remoteAddress}:${s.remotePort}`, remoteAddress: s.remoteAddress, remotePort: s.remotePort };
  }
  return { clientAddress: 'socket' };
}

/**
 * Serves one connected socket (TCP, unix, a socketpair end) until the client
 * disconnects or `opts.signal` aborts. Never rejects for client misbehaviour.
 */
export async function serve(socket: Duplex, exports: readonly Export[], opts: ServeOptions = {}): Promise<void> {
  checkExports(exports);
  const logger = opts.logger ?? silentLogger;
  const info = describe(socket);
  const peer = info.clientAddress;
  const closed = new Promise<void>((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once('close', () => resolve());
  });
  socket.on('error', (err) => logger.debug(`${peer}: socket error: ${err.message}`));
  (socket as Partial<Socket>).setNoDelay?.(true);

  const signal = opts.signal;
  if (signal?.aborted) {
    socket.destroy();
    return closed;
  }
  if (!(await admitted(socket, info, opts, logger))) return closed;

  const maxPayload = opts.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD;
  const src = new FrameSource(socket, { maxPayload, maxOptionLength: 64 * 1024 });
  let transmission: Transmission | undefined;
  let shuttingDown = false;
  let graceTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    shuttingDown = true;
    if (transmission) transmission.shutdown();
    else {
      graceTimer = setTimeout(() => socket.destroy(), SHUTDOWN_GRACE_MS);
      graceTimer.unref();
    }
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => {
    logger.info(`${peer}: handshake timed out`);
    socket.destroy();
  }, opts.handshakeTimeout ?? 30_000);
  timer.unref();

  let negotiated;
  try {
    negotiated = await negotiate({
      src,
      write: (b) => {
        if (!socket.destroyed && socket.writable) socket.write(b);
      },
      exports,
      maxPayload,
      readOnly: opts.readOnly ?? false,
      open: opts.open,
      clientAddress: peer,
      logger,
      shuttingDown: () => shuttingDown,
    });
  } catch (e) {
    logger.warn(`${peer}: handshake failed: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  if (negotiated === undefined || socket.destroyed) {
    if (negotiated?.ownsDevice) await closeDevice(negotiated.session.device, logger);
    signal?.removeEventListener('abort', onAbort);
    if (!socket.destroyed) socket.end();
    const t = setTimeout(() => socket.destroy(), SHUTDOWN_GRACE_MS);
    t.unref();
    await closed;
    clearTimeout(t);
    if (graceTimer) clearTimeout(graceTimer);
    return;
  }
  if (graceTimer) clearTimeout(graceTimer);

  const { session, ownsDevice } = negotiated;
  logger.debug(`${peer}: serving "${session.export.name}" flags 0x${session.flags.toString(16)}`);
  const reader = new RequestReader(
    socket,
    { extended: session.extended, maxPayload: session.blockSizes.max, maxDrain: src.decoder.maxDrain },
    src.detach(),
  );
  transmission = new Transmission(
    socket,
    reader,
    session,
    { maxInFlight: opts.maxInFlight ?? 256, maxInFlightBytes: opts.maxInFlightBytes ?? 64 * 1024 * 1024 },
    logger,
    peer,
  );
  transmission.start();
  if (shuttingDown) transmission.shutdown();
  await transmission.done;
  signal?.removeEventListener('abort', onAbort);
  if (ownsDevice) await closeDevice(session.device, logger);
  await closed;
}

/** Runs `opts.preconnect`; a refused (or failing) client's socket is destroyed. */
async function admitted(socket: Duplex, info: ConnectionInfo, opts: ServeOptions, logger: Logger): Promise<boolean> {
  if (!opts.preconnect) return true;
  let ok = false;
  try {
    ok = await opts.preconnect(info);
  } catch (e) {
    logger.warn(`${info.clientAddress}: preconnect failed: ${(e as Error).message}`);
  }
  if (!ok) {
    logger.info(`${info.clientAddress}: refused by preconnect`);
    socket.destroy();
  }
  return ok;
}

async function closeDevice(device: Device, logger: Logger): Promise<void> {
  try {
    await device.close?.();
  } catch (e) {
    logger.warn(`device close failed: ${(e as Error).message}`);
  }
}

/** `nbd://host:port` or `nbd+unix:///?socket=PATH` as net.ListenOptions. */
export function listenOptionsOf(address: string | ListenOptions): ListenOptions {
  if (typeof address !== 'string') return address;
  const uri = parseNbdUri(address);
  if (uri.tls) throw new TypeError(`listen: TLS is not supported (${address})`);
  if (uri.transport === 'unix') return { path: uri.socket! };
  if (uri.transport === 'tcp') return { host: uri.host, port: uri.port ?? Limits.PORT };
  throw new TypeError(`listen: ${uri.transport} is not supported (${address})`);
}

/**
 * Listens on `address` and serves every connection. Settles once `opts.signal`
 * aborted and every connection closed; rejects if listening fails.
 */
export async function listenAndServe(address: string | ListenOptions, exports: readonly Export[], opts: ServeOptions = {}): Promise<void> {
  checkExports(exports);
  const logger = opts.logger ?? silentLogger;
  const listenOpts = listenOptionsOf(address);
  const pool = opts.threads ? await startPool(opts.threads, exports, opts, logger) : undefined;
  const connections = new Set<Promise<void>>();
  const handOff = async (socket: Socket, pool: ThreadPool) => {
    if (!(await admitted(socket, describe(socket), opts, logger))) return;
    if (opts.signal?.aborted) socket.destroy();
    else await pool.hand(socket);
  };
  const server: Server = createServer({ noDelay: true, pauseOnConnect: true }, (socket) => {
    if (opts.maxConnections !== undefined && connections.size >= opts.maxConnections) {
      logger.warn(`connection refused: ${connections.size} connections already (maxConnections)`);
      socket.destroy();
      return;
    }
    const served = pool ? handOff(socket, pool) : serve(socket, exports, opts);
    const p = served.catch((e: unknown) => logger.error(`connection failed: ${(e as Error).message}`));
    connections.add(p);
    void p.finally(() => connections.delete(p));
  });
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
  const where = server.address();
  logger.info(`listening on ${typeof where === 'string' ? where : `${where?.address}:${where?.port}`}`);
  if (where !== null) opts.onListen?.(where);

  const signal = opts.signal;
  const stopped = new Promise<void>((resolve) => {
    if (signal === undefined) return; // serves forever
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
  server.on('error', (e) => logger.error(`listener error: ${e.message}`));
  await stopped;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // serve() sees the same signal and winds its connection down; workers are told.
  pool?.shutdown();
  while (connections.size > 0) await Promise.all([...connections]);
  await closed;
  await pool?.close();
}

function startPool(threads: number, exports: readonly Export[], opts: ServeOptions, logger: Logger): Promise<ThreadPool> {
  if (opts.open) throw new TypeError('serve: the open hook cannot run on worker threads (threads)');
  const { handshakeTimeout, maxPayload, maxInFlight, maxInFlightBytes, readOnly } = opts;
  return ThreadPool.start(threads, exports, { handshakeTimeout, maxPayload, maxInFlight, maxInFlightBytes, readOnly }, logger, opts.logger !== undefined);
}
