// Serving one connection: serve() runs a connected socket through the handshake and
// transmission; serveTransmission() serves a socket already past the handshake (the
// kernel's end of a socketpair). Listening is in listener.ts; what each option means,
// and how a connection's options are built, in serve-options.ts.
import type { Duplex } from 'node:stream';
import { NodeTransport, type ServerTls, serverTls, type TlsIdentity } from '@nbd/node';
import { Limits, NbdInvalidArgumentError, type Transport, tieToSignal } from '@nbd/protocol';
import { checkExports, checkOptions, checkServe } from './check-serve.js';
import { ServerConnection } from './connection.js';
import type { ConnectionLimits, ConnectionTls, Start } from './connection-state.js';
import type { Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { Negotiation, oldstyleGreeting } from './negotiation.js';
import {
  type ConnectionInfo,
  type ConnectionOptions,
  connectionData,
  connectionHooks,
  connectionOptions,
  type ServeOptions,
} from './serve-options.js';
import { plainSession } from './session.js';

/** Grace for connections still negotiating when the server shuts down. */
const SHUTDOWN_GRACE_MS = 1000;

type Limited = Pick<ServeOptions, 'maxInFlight' | 'maxInFlightBytes' | 'handshakeTimeout'>;

function limitsOf(opts: Limited): ConnectionLimits {
  return {
    maxInFlight: opts.maxInFlight ?? 256,
    maxInFlightBytes: opts.maxInFlightBytes ?? 64 * 1024 * 1024,
    handshakeTimeout: opts.handshakeTimeout ?? 30_000,
    maxOptionLength: 64 * 1024,
    maxDrain: 2 ** 32,
  };
}

function transportOf(socket: Duplex | Transport, opts: Pick<ServeOptions, 'keepAlive'>): Transport {
  if ('read' in socket && 'rebuffer' in socket) return socket;
  return new NodeTransport(socket as Duplex, { keepAlive: opts.keepAlive ?? 30_000 });
}

/** The prepared TLS credentials of `opts`, if any (files are read here). */
export async function tlsOf(opts: Pick<ServeOptions, 'tls'>): Promise<ServerTls | undefined> {
  const t = opts.tls;
  if (t === undefined) return undefined;
  return 'accept' in t ? t : serverTls(t);
}

/** Runs one connection until it is done, shutting it down when `signal` aborts. */
async function run(
  transport: Transport,
  start: Start,
  opts: Limited & { signal?: AbortSignal | undefined; logger: Logger },
  tls?: ConnectionTls,
): Promise<void> {
  const conn = new ServerConnection(transport, start, limitsOf(opts), opts.logger, tls);
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
  checkServe(exports, opts);
  const o = connectionOptions(connectionData(opts), connectionHooks(opts), opts.signal, opts.logger ?? silentLogger);
  const transport = transportOf(socket, o);
  if (o.signal?.aborted || !(await admitted(transport.peer, o.preconnect, o.logger))) {
    transport.destroy();
    return;
  }
  return serveAdmitted(transport, exports, o);
}

/**
 * @internal One connection that preconnect's first call admitted, with options from
 * connectionOptions(): the listener calls it on this thread, and each worker thread for
 * the sockets it is handed.
 */
export async function serveAdmitted(socket: Duplex | Transport, exports: readonly Export[], o: ConnectionOptions): Promise<void> {
  const transport = transportOf(socket, o);
  if (o.signal?.aborted) {
    transport.destroy();
    return;
  }
  const maxPayload = o.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD;
  const readOnly = o.readOnly ?? false;
  if (o.handshake === 'oldstyle') {
    const exp = exports[0]!;
    const session = plainSession(exp, exp.device, { readOnly, maxPayload });
    return run(transport, { session, ownsDevice: false, greeting: oldstyleGreeting(session) }, o);
  }
  const tls = await tlsOf(o);
  const negotiation = new Negotiation({
    exports,
    maxPayload,
    readOnly,
    open: o.open,
    clientAddress: transport.peer.address,
    tls: tls?.mode ?? 'off',
  });
  const preconnect = o.preconnect;
  const authorize = preconnect && ((identity: TlsIdentity) => admitted({ ...transport.peer, tls: identity }, preconnect, o.logger));
  return run(transport, { negotiation }, o, tls && { server: tls, ...(authorize ? { authorize } : {}) });
}

/** What serveTransmission uses: the handshake happened elsewhere, so no hook, TLS or listener option applies. */
export type TransmissionOptions = Pick<
  ServeOptions,
  'signal' | 'logger' | 'readOnly' | 'maxPayload' | 'maxInFlight' | 'maxInFlightBytes' | 'keepAlive'
>;

/** Options that would silently do nothing in serveTransmission (a JavaScript caller may pass them). */
const notForTransmission = ['preconnect', 'open', 'tls', 'handshake', 'threads'] as const;

/**
 * Serves `exp` on a socket whose handshake already happened elsewhere: the kernel's
 * end of a socketpair that `@nbd/linux` configured, with the size and flags this
 * session has (simple replies, compact requests).
 */
export async function serveTransmission(socket: Duplex | Transport, exp: Export, opts: TransmissionOptions = {}): Promise<void> {
  checkExports([exp]);
  checkOptions([exp], opts);
  const given = notForTransmission.filter((k) => (opts as ServeOptions)[k] !== undefined);
  if (given.length > 0) throw new NbdInvalidArgumentError(`serveTransmission: ${given.join(', ')} cannot apply (no handshake here)`);
  const logger = opts.logger ?? silentLogger;
  const session = plainSession(exp, exp.device, {
    readOnly: opts.readOnly ?? false,
    maxPayload: opts.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD,
  });
  return run(transportOf(socket, opts), { session, ownsDevice: false }, { ...opts, logger });
}

/** The transmission flags `serveTransmission` will use for `exp` (what the kernel must be told). */
export function transmissionFlagsOf(exp: Export, opts: { readOnly?: boolean } = {}): number {
  return plainSession(exp, exp.device, { readOnly: opts.readOnly ?? false, maxPayload: Limits.DEFAULT_MAX_PAYLOAD }).flags;
}

/** Runs `preconnect` (when there is one); false (or a failure) refuses the client. */
export async function admitted(peer: ConnectionInfo, preconnect: ServeOptions['preconnect'], logger: Logger): Promise<boolean> {
  if (!preconnect) return true;
  let ok = false;
  try {
    ok = await preconnect(peer);
  } catch (e) {
    logger.warn(`${peer.address}: preconnect failed: ${(e as Error).message}`);
  }
  if (!ok) logger.info(`${peer.address}: refused by preconnect`);
  return ok;
}
