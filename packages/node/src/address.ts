// Addresses: NBD URIs (as strings or URL objects), unix socket paths and TCP host/port
// pairs, turned into what net.connect and net.Server#listen take.
import { type ListenOptions, connect as netConnect, type Socket } from 'node:net';
import { abortError, Limits, NbdUnsupportedError, type NbdUri, parseNbdUri, tieToSignal } from '@nbd/protocol';

/** Where to connect or listen: an NBD URI (string or URL), `{ path }` of a unix socket, or `{ host, port }`. */
export type NbdAddress = string | URL | { path: string } | { host?: string; port?: number };

/** Any address as an NBD URI: `{ path }` is `nbd+unix`, `{ host, port }` is `nbd`. */
export function toNbdUri(address: NbdAddress): NbdUri {
  if (typeof address === 'string') return parseNbdUri(address);
  if (address instanceof URL) return parseNbdUri(address.href);
  if ('path' in address) return { transport: 'unix', tls: false, socket: address.path, exportName: '', params: {} };
  return { transport: 'tcp', tls: false, host: address.host ?? 'localhost', port: address.port ?? Limits.PORT, exportName: '', params: {} };
}

/** The net.connect / listen options of a URI's transport (vsock is refused: Node has no vsock sockets). */
export function socketOptionsOf(uri: NbdUri): { path: string } | { host: string; port: number } {
  if (uri.transport === 'unix') return { path: uri.socket! };
  if (uri.transport === 'tcp') return { host: uri.host ?? 'localhost', port: uri.port ?? Limits.PORT };
  throw new NbdUnsupportedError('nbd+vsock: Node.js has no vsock sockets');
}

/** `nbd://host:port`, `nbd+unix:///?socket=PATH`, `{ path }`, `{ host, port }` or ListenOptions as ListenOptions. */
export function listenOptionsOf(address: NbdAddress | ListenOptions): ListenOptions {
  if (typeof address === 'string' || address instanceof URL) return socketOptionsOf(toNbdUri(address));
  if ('path' in address && typeof address.path === 'string') return { path: address.path };
  const a = address as ListenOptions;
  if (a.port === undefined && a.host !== undefined) return { ...a, port: Limits.PORT };
  return a;
}

/** Connects a plain socket to the URI's address; `signal` aborts the attempt. */
export function connectSocket(uri: NbdUri, signal?: AbortSignal): Promise<Socket> {
  const where = socketOptionsOf(uri);
  const { promise, resolve, reject } = Promise.withResolvers<Socket>();
  const socket = netConnect({ ...where, noDelay: true });
  const untie = tieToSignal(signal, () => {
    socket.destroy();
    reject(abortError(signal, 'connecting'));
  });
  socket.once('connect', () => {
    untie();
    socket.off('error', reject);
    resolve(socket);
  });
  socket.once('error', (e) => {
    untie();
    reject(e);
  });
  return promise;
}
