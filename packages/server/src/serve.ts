// Entry points: serve() runs one connected socket through the handshake and
// transmission; listenAndServe() accepts connections until its signal aborts and
// settles only when every connection has closed; serveTransmission() serves a
// socket that is already past the handshake (the kernel's end of a socketpair).
import { type AddressInfo, type ListenOptions, type Server, type Socket, createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { Limits, NbdInvalidArgumentError, type PeerInfo, type Transport, parseNbdUri, tieToSignal } from '@nbd/protocol';
import {
  type NbdAddress,
  NodeTransport,
  type ServerTls,
  type ServerTlsOptions,
  type TlsIdentity,
  listenOptionsOf,
  peerOf,
  serverTls,
} from '@nbd/node';
import { type ConnectionLimits, type ConnectionTls, ServerConnection, type Start } from './connection.js';
import type { Device, Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { Negotiation, type OpenContext, oldstyleGreeting } from './negotiation.js';
import { plainSession } from './session.js';
import { ThreadPool } from './threads.js';

/** What `preconnect` learns about a client: before the greeting, and again once TLS is up. */
export interface ConnectionInfo extends PeerInfo {
  /** Set when preconnect runs again after STARTTLS: who the client authenticated as. */
  tls?: TlsIdentity;
}

/** Options of {@link serve}, {@link listenAndServe} and {@link serveTransmission}. */
export interface ServeOptions {
  /** Aborting stops accepting, fails in-flight and new requests with ESHUTDOWN, then closes. */
  signal?: AbortSignal;
  /** Connections served at once (listenAndServe); more are closed before the greeting. Default 10 000. */
  maxConnections?: number;
  /** Connections from one remote address at once (TCP only). Default 1 000. */
  maxConnectionsPerClient?: number;
  /** Milliseconds a client has to finish the handshake, from accept to transmission. Default 30 000. */
  handshakeTimeout?: number;
  /**
   * Return false to close the connection (nbdkit's preconnect): called before the greeting,
   * and again once a client has started TLS, with `info.tls` saying who it authenticated as.
   */
  preconnect?: (info: ConnectionInfo) => boolean | Promise<boolean>;
  /**
   * TLS: credentials (a certificates directory in nbdkit's layout, PEM values, a PSK file
   * or keys) and a mode ('off', 'on', or 'require', the default). Loaded once by
   * listenAndServe; `serverTls()` of @nbd/node prepares them for `serve`.
   */
  tls?: ServerTlsOptions | ServerTls;
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
  /** TCP keepalive: probe after this many idle milliseconds (0: off). Default 30 000. */
  keepAlive?: number;
  /** Serve every export read-only. */
  readOnly?: boolean;
  /**
   * 'newstyle' (default): fixed newstyle negotiation. 'oldstyle': no options, the first
   * export's size and flags in a 152-byte greeting, then transmission with simple
   * replies (the Perl Linux::NBD::Server, `nbdkit -o`).
   */
  handshake?: 'newstyle' | 'oldstyle';
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
    const dsize = e.device.size;
    if (dsize !== undefined && e.size > dsize) {
      throw new RangeError(`serve: export "${e.name}" is ${e.size} bytes but its device has only ${dsize}`);
    }
  }
}

function limitsOf(opts: ServeOptions): ConnectionLimits {
  return {
    maxInFlight: opts.maxInFlight ?? 256,
    maxInFlightBytes: opts.maxInFlightBytes ?? 64 * 1024 * 1024,
    handshakeTimeout: opts.handshakeTimeout ?? 30_000,
    maxOptionLength: 64 * 1024,
    maxDrain: 2 ** 32,
  };
}

function transportOf(socket: Duplex | Transport, opts: ServeOptions): Transport {
  if ('read' in socket && 'rebuffer' in socket) return socket;
  return new NodeTransport(socket as Duplex, { keepAlive: opts.keepAlive ?? 30_000 });
}

/** The prepared TLS credentials of `opts`, if any (files are read here). */
async function tlsOf(opts: ServeOptions): Promise<ServerTls | undefined> {
  const t = opts.tls;
  if (t === undefined) return undefined;
  return 'accept' in t ? t : serverTls(t);
}

/** Runs one connection until it is done, shutting it down when `signal` aborts. */
async function run(transport: Transport, start: Start, opts: ServeOptions, logger: Logger, tls?: ConnectionTls): Promise<void> {
  const conn = new ServerConnection(transport, start, limitsOf(opts), logger, tls);
  const untie = tieToSignal(opts.signal, () => conn.shutdown(SHUTDOWN_GRACE_MS));
  try {
    await conn.done;
  } finally {
    untie();
  }
}

/**
 * Serves one connected socket (TCP, unix, a socketpair end) or transport until the
 * client disconnects or `opts.signal` aborts. Never rejects for client misbehaviour.
 */
export async function serve(socket: Duplex | Transport, exports: readonly Export[], opts: ServeOptions = {}): Promise<void> {
  checkExports(exports);
  const logger = opts.logger ?? silentLogger;
  const transport = transportOf(socket, opts);
  if (opts.signal?.aborted || !(await admitted(transport.peer, opts, logger))) {
    transport.destroy();
    return;
  }
  const maxPayload = opts.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD;
  const readOnly = opts.readOnly ?? false;
  if (opts.handshake === 'oldstyle') {
    const exp = exports[0]!;
    const session = plainSession(exp, exp.device, { readOnly, maxPayload });
    return run(transport, { session, ownsDevice: false, greeting: oldstyleGreeting(session) }, opts, logger);
  }
  const tls = await tlsOf(opts);
  const negotiation = new Negotiation({ exports, maxPayload, readOnly, open: opts.open, clientAddress: transport.peer.address, tls: tls?.mode ?? 'off' });
  const preconnect = opts.preconnect;
  const authorize = preconnect && ((identity: TlsIdentity) => admitted({ ...transport.peer, tls: identity }, opts, logger));
  return run(transport, { negotiation }, opts, logger, tls && { server: tls, ...(authorize ? { authorize } : {}) });
}

/**
 * Serves `exp` on a socket whose handshake already happened elsewhere: the kernel's
 * end of a socketpair that `@nbd/linux` configured, with the size and flags this
 * session has (simple replies, compact requests).
 */
export async function serveTransmission(socket: Duplex | Transport, exp: Export, opts: ServeOptions = {}): Promise<void> {
  checkExports([exp]);
  const logger = opts.logger ?? silentLogger;
  const session = plainSession(exp, exp.device, { readOnly: opts.readOnly ?? false, maxPayload: opts.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD });
  return run(transportOf(socket, opts), { session, ownsDevice: false }, opts, logger);
}

/** The transmission flags `serveTransmission` will use for `exp` (what the kernel must be told). */
export function transmissionFlagsOf(exp: Export, opts: { readOnly?: boolean } = {}): number {
  return plainSession(exp, exp.device, { readOnly: opts.readOnly ?? false, maxPayload: Limits.DEFAULT_MAX_PAYLOAD }).flags;
}

/** Runs `opts.preconnect`; false (or a failure) refuses the client. */
async function admitted(peer: ConnectionInfo, opts: ServeOptions, logger: Logger): Promise<boolean> {
  if (!opts.preconnect) return true;
  let ok = false;
  try {
    ok = await opts.preconnect(peer);
  } catch (e) {
    logger.warn(`${peer.address}: preconnect failed: ${(e as Error).message}`);
  }
  if (!ok) logger.info(`${peer.address}: refused by preconnect`);
  return ok;
}

/**
 * Listens on `address` (an NBD URI, `{ path }`, `{ host, port }` or net ListenOptions)
 * and serves every connection. Settles once `opts.signal` aborted and every
 * connection closed; rejects if listening fails.
 */
export async function listenAndServe(address: NbdAddress | ListenOptions, exports: readonly Export[], opts: ServeOptions = {}): Promise<void> {
  checkExports(exports);
  const logger = opts.logger ?? silentLogger;
  const listenOpts = listenOptionsOf(address);
  if (typeof address === 'string' || address instanceof URL) {
    if (parseNbdUri(String(address)).tls && opts.tls === undefined) throw new NbdInvalidArgumentError(`listen: ${String(address)} asks for TLS; give ServeOptions.tls`);
  }
  // Credentials are read once for every connection (workers read their own).
  if (opts.tls !== undefined && !opts.threads) opts = { ...opts, tls: await tlsOf(opts) };
  const pool = opts.threads ? await startPool(opts.threads, exports, opts, logger) : undefined;
  const connections = new Set<Promise<void>>();
  const admission = new Admission(opts, logger);
  const handOff = async (socket: Socket, pool: ThreadPool) => {
    if (!(await admitted(peerOf(socket), opts, logger))) socket.destroy();
    else if (opts.signal?.aborted) socket.destroy();
    else await pool.hand(socket);
  };
  const server: Server = createServer({ noDelay: true, pauseOnConnect: true }, (socket) => {
    const leave = admission.enter(socket, connections.size);
    if (leave === undefined) return;
    const served = pool ? handOff(socket, pool) : serve(socket, exports, opts);
    const p = served.catch((e: unknown) => logger.error(`connection failed: ${(e as Error).message}`)).finally(leave);
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
  server.on('error', (e) => logger.error(`listener error: ${e.message}`));
  const stopped = Promise.withResolvers<void>();
  tieToSignal(opts.signal, () => stopped.resolve()); // no signal: serves forever
  await stopped.promise;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // serve() sees the same signal and winds its connection down; workers are told.
  pool?.shutdown();
  while (connections.size > 0) await Promise.all([...connections]);
  await closed;
  await pool?.close();
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

function startPool(threads: number, exports: readonly Export[], opts: ServeOptions, logger: Logger): Promise<ThreadPool> {
  if (opts.open) throw new TypeError('serve: the open hook cannot run on worker threads (threads)');
  if (opts.handshake === 'oldstyle') throw new TypeError('serve: oldstyle is not served on worker threads');
  const { handshakeTimeout, maxPayload, maxInFlight, maxInFlightBytes, readOnly, keepAlive } = opts;
  if (opts.tls !== undefined && 'accept' in opts.tls) throw new TypeError('serve: with threads, give tls as options (each worker loads them)');
  const tls = opts.tls as ServerTlsOptions | undefined;
  return ThreadPool.start(threads, exports, { handshakeTimeout, maxPayload, maxInFlight, maxInFlightBytes, readOnly, keepAlive, tls }, logger, opts.logger !== undefined);
}
