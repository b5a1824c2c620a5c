// What a client can connect to: an NBD URI (string or URL), `{ path }` of a unix
// socket, `{ host, port }`, a connected Duplex, or a ready Transport. Every form
// becomes a Transport here; the rest of the client sees nothing else.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { getSystemErrorMap } from 'node:util';
import { type ClientTlsOptions, connectSocket, type NbdAddress, NbdSystemError, NodeTransport, toNbdUri } from '@nbd/node';
import { Limits, NbdError, NbdInvalidArgumentError, NbdUnsupportedError, type NbdUri, type Transport } from '@nbd/protocol';

/**
 * Where to connect: an NBD URI (`nbd://host:port/export`, `nbd+unix:///export?socket=PATH`)
 * as a string or `URL`, `{ path }` of a unix socket, `{ host, port }` (TCP), an already
 * connected `Duplex` (a `net.Socket`, one end of a socketpair, any stream), or a `Transport`.
 */
export type ConnectTarget = NbdAddress | Duplex | Transport;

/** A stream we were given, not an address we can dial again. */
export function isStreamTarget(target: ConnectTarget): target is Duplex | Transport {
  return isDuplex(target) || isTransport(target);
}

function isDuplex(t: unknown): t is Duplex {
  const d = t as Partial<Duplex> | null;
  return typeof d === 'object' && d !== null && typeof d.pipe === 'function' && typeof d.write === 'function' && typeof d.on === 'function';
}

function isTransport(t: unknown): t is Transport {
  const x = t as Partial<Transport> | null;
  return typeof x === 'object' && x !== null && typeof x.rebuffer === 'function' && typeof x.read === 'function' && 'peer' in x;
}

/** The NBD URI of an address target (its export name and transport), checked for what we support. */
export function uriOf(target: NbdAddress): NbdUri {
  if (typeof target !== 'string' && !(target instanceof URL) && (typeof target !== 'object' || target === null)) {
    throw new NbdInvalidArgumentError(
      `not a connect target: ${String(target)} (give an NBD URI, a URL, { path }, { host, port } or a connected stream)`,
    );
  }
  let uri: NbdUri;
  try {
    uri = toNbdUri(target);
  } catch (e) {
    if (e instanceof NbdError) throw e;
    throw new NbdInvalidArgumentError(`bad NBD URI: ${(e as Error).message}`, { cause: e });
  }
  if (uri.transport === 'vsock') throw new NbdUnsupportedError('nbd+vsock: Node.js has no vsock sockets');
  return uri;
}

/**
 * The TLS settings an NBD URI asks for (doc/uri.md, with libnbd's names): `nbds…` means
 * TLS is required; `tls-certificates`, `tls-psk-file`, `tls-hostname`, `tls-verify-peer`
 * and `tls-type` (psk or x509) set the credentials; the user name comes from userinfo.
 */
export function tlsOfUri(uri: NbdUri): ClientTlsOptions | undefined {
  const p = uri.params;
  const anyParam = Object.keys(p).some((k) => k.startsWith('tls-'));
  if (!uri.tls && !anyParam) return undefined;
  const o: ClientTlsOptions = { mode: uri.tls ? 'require' : 'allow' };
  if (p['tls-certificates'] !== undefined) o.certificates = p['tls-certificates'];
  if (p['tls-psk-file'] !== undefined) o.pskFile = p['tls-psk-file'];
  if (p['tls-hostname'] !== undefined) o.hostname = p['tls-hostname'];
  if (uri.user !== undefined) o.username = uri.user;
  const verify = p['tls-verify-peer'];
  if (verify !== undefined) {
    if (!/^(true|false|1|0|yes|no|on|off)$/i.test(verify))
      throw new NbdInvalidArgumentError(`tls-verify-peer=${verify}: expected true or false`);
    o.verifyPeer = /^(true|1|yes|on)$/i.test(verify);
  }
  const type = p['tls-type'];
  if (type !== undefined) {
    if (type !== 'psk' && type !== 'x509') throw new NbdInvalidArgumentError(`tls-type=${type}: expected psk or x509`);
    if (type === 'psk' && o.pskFile === undefined) throw new NbdInvalidArgumentError('tls-type=psk needs tls-psk-file');
    if (type === 'x509') delete o.pskFile;
  }
  return o;
}

/** What opening a target gives: a transport, the export the URI names, and the TLS it asks for. */
export interface Opened {
  transport: Transport;
  exportName: string;
  /** From an `nbds…` URI or `tls-*` parameters. */
  tls: ClientTlsOptions | undefined;
  /** The host connected to: the name a server certificate must carry by default. */
  host: string | undefined;
}

/** A transport for `target`, the export its URI names ('' for streams and plain addresses), and its TLS settings. */
export async function openTransport(target: ConnectTarget, signal?: AbortSignal): Promise<Opened> {
  if (isTransport(target)) return { transport: target, exportName: '', tls: undefined, host: undefined };
  if (isDuplex(target)) return { transport: new NodeTransport(target), exportName: '', tls: undefined, host: undefined };
  const uri = uriOf(target);
  const tls = tlsOfUri(uri);
  let socket: Socket;
  try {
    socket = await connectSocket(uri, signal);
  } catch (e) {
    if (e instanceof NbdError) throw e;
    const err = e as NodeJS.ErrnoException;
    const where = uri.transport === 'unix' ? uri.socket : `${uri.host ?? 'localhost'}:${uri.port ?? Limits.PORT}`;
    throw new NbdSystemError(`cannot connect to ${where}: ${whyNoConnection(err)}`, err.code ?? 'EIO', Math.abs(err.errno ?? 0), {
      cause: e,
    });
  }
  return { transport: new NodeTransport(socket), exportName: uri.exportName, tls, host: uri.transport === 'tcp' ? uri.host : undefined };
}

/** Why a connection failed, in words, with the code: Node's `connect ECONNREFUSED 127.0.0.1:1` repeats the address. */
const CONNECT_FAILURES: Record<string, string> = {
  ECONNREFUSED: 'nothing is listening there',
  ENOENT: 'no such socket',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'the host name cannot be looked up now',
};

function whyNoConnection(err: NodeJS.ErrnoException): string {
  const code = err.code;
  if (code === undefined) return err.message;
  const words = CONNECT_FAILURES[code] ?? (typeof err.errno === 'number' ? getSystemErrorMap().get(err.errno)?.[1] : undefined);
  return words === undefined ? err.message : `${words} (${code})`;
}
