// ServeOptions, and where each of its fields takes effect. One table says it for every
// field (the compiler refuses a field missing from it), and the options one connection
// is served with are built from that table, the same way on this thread and on a
// worker thread (ServeOptions.threads), so no field can mean one thing on one thread
// and another on workers.
import type { AddressInfo } from 'node:net';
import type { ServerTls, ServerTlsOptions, TlsIdentity } from '@nbd/node';
import type { PeerInfo } from '@nbd/protocol';
import type { Device } from './device.js';
import type { Logger } from './logger.js';
import type { OpenContext } from './negotiation.js';

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
   * With `threads`, both calls run on the main thread.
   */
  preconnect?: (info: ConnectionInfo) => boolean | Promise<boolean>;
  /**
   * TLS: credentials (a certificates directory in nbdkit's layout, PEM values, a PSK file
   * or keys) and a mode ('off', 'on', or 'require', the default). Loaded once by
   * listenAndServe; `serverTls()` of @nbd/node prepares them for `serve`.
   */
  tls?: ServerTlsOptions | ServerTls;
  /**
   * A device per connection (nbdkit's open); closed with the connection. Default: the
   * export's device. With `threads` it runs on the main thread, and the device it returns
   * needs `share()`: the worker serves its own handle on it.
   */
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
   * FileDevice have it). Linux only; loads koffi.
   */
  threads?: number;
  /** Called once the listener is up (listenAndServe), with its address. */
  onListen?: (address: string | AddressInfo) => void;
}

/**
 * Where each field takes effect:
 * - 'listener': where connections are accepted (the main thread), for every connection
 *   whether it is then served here or on a worker; `signal` reaches workers as their
 *   shutdown, `logger` receives their log lines.
 * - 'data': per connection, plain data: a worker gets a structured clone of it.
 * - 'hook': per connection, a function: a worker calls it on the main thread (thread-hooks.ts).
 */
export const optionScopes = {
  signal: 'listener',
  maxConnections: 'listener',
  maxConnectionsPerClient: 'listener',
  logger: 'listener',
  threads: 'listener',
  onListen: 'listener',
  handshakeTimeout: 'data',
  tls: 'data',
  maxPayload: 'data',
  maxInFlight: 'data',
  maxInFlightBytes: 'data',
  keepAlive: 'data',
  readOnly: 'data',
  handshake: 'data',
  preconnect: 'hook',
  open: 'hook',
} as const satisfies Record<keyof ServeOptions, 'listener' | 'data' | 'hook'>;

type Scopes = typeof optionScopes;
type KeysIn<S> = { [K in keyof Scopes]: Scopes[K] extends S ? K : never }[keyof Scopes];
export type DataKey = KeysIn<'data'>;
export type HookKey = KeysIn<'hook'>;
/** The per-connection fields that are plain data (what a worker receives, cloned). */
export type ConnectionData = Pick<ServeOptions, DataKey>;
/** The per-connection functions. */
export type ConnectionHooks = Pick<ServeOptions, HookKey>;

/** Everything one connection is served with, on this thread or on a worker. */
export interface ConnectionOptions extends ConnectionData, ConnectionHooks {
  signal: AbortSignal | undefined;
  logger: Logger;
}

function pick<K extends keyof ServeOptions>(opts: ServeOptions, scope: Scopes[K]): Pick<ServeOptions, K> {
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(optionScopes)) {
    const value = opts[key as keyof ServeOptions];
    if (s === scope && value !== undefined) out[key] = value;
  }
  return out as Pick<ServeOptions, K>;
}

/** Every 'data' field of `opts`, and nothing else. */
export function connectionData(opts: ServeOptions): ConnectionData {
  return pick<DataKey>(opts, 'data');
}

/** Every 'hook' field of `opts`, and nothing else. */
export function connectionHooks(opts: ServeOptions): ConnectionHooks {
  return pick<HookKey>(opts, 'hook');
}

/** The one way a connection's options are put together, on this thread and on a worker. */
export function connectionOptions(
  data: ConnectionData,
  hooks: ConnectionHooks,
  signal: AbortSignal | undefined,
  logger: Logger,
): ConnectionOptions {
  return { ...data, ...hooks, signal, logger };
}
