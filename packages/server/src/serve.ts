// Serving one connection: serve() runs a connected socket through the handshake and
// transmission; serveTransmission() serves a socket already past the handshake (the
// kernel's end of a socketpair). Listening is in listener.ts.
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Limits, NbdInvalidArgumentError, type PeerInfo, type Transport, tieToSignal } from '@nbd/protocol';
import { NodeTransport, type ServerTls, type ServerTlsOptions, type TlsIdentity, serverTls } from '@nbd/node';
import type { ConnectionLimits, ConnectionTls, Start } from './connection-state.js';
import { ServerConnection } from './connection.js';
import type { Device, Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { Negotiation, type OpenContext, oldstyleGreeting } from './negotiation.js';
import { plainSession } from './session.js';

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

export function checkExports(exports: readonly Export[]): void {
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

/** Oldstyle has no options, so no STARTTLS: refused rather than served in plaintext when TLS was asked for. */
export function checkHandshake(opts: ServeOptions): void {
  const tlsMode = opts.tls === undefined ? 'off' : (opts.tls.mode ?? 'require');
  if (opts.handshake === 'oldstyle' && tlsMode !== 'off') {
    throw new NbdInvalidArgumentError(`serve: an oldstyle handshake has no STARTTLS, so it cannot serve tls mode '${tlsMode}'`);
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
export async function tlsOf(opts: ServeOptions): Promise<ServerTls | undefined> {
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
  checkHandshake(opts);
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
  const negotiation = new Negotiation({
    exports,
    maxPayload,
    readOnly,
    open: opts.open,
    clientAddress: transport.peer.address,
    tls: tls?.mode ?? 'off',
  });
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
  const session = plainSession(exp, exp.device, {
    readOnly: opts.readOnly ?? false,
    maxPayload: opts.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD,
  });
  return run(transportOf(socket, opts), { session, ownsDevice: false }, opts, logger);
}

/** The transmission flags `serveTransmission` will use for `exp` (what the kernel must be told). */
export function transmissionFlagsOf(exp: Export, opts: { readOnly?: boolean } = {}): number {
  return plainSession(exp, exp.device, { readOnly: opts.readOnly ?? false, maxPayload: Limits.DEFAULT_MAX_PAYLOAD }).flags;
}

/** Runs `opts.preconnect`; false (or a failure) refuses the client. */
export async function admitted(peer: ConnectionInfo, opts: ServeOptions, logger: Logger): Promise<boolean> {
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
