// What a client can connect to: an NBD URI (string or URL), `{ path }` of a unix
// socket, `{ host, port }`, a connected Duplex, or a ready Transport. Every form
// becomes a Transport here; the rest of the client sees nothing else.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type NbdAddress, NbdSystemError, NodeTransport, connectSocket, toNbdUri } from '@nbd/node';
import { NbdError, NbdInvalidArgumentError, NbdUnsupportedError, type NbdUri, type Transport } from '@nbd/protocol';

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
    throw new NbdInvalidArgumentError(`not a connect target: ${String(target)} (give an NBD URI, a URL, { path }, { host, port } or a connected stream)`);
  }
  let uri: NbdUri;
  try {
    uri = toNbdUri(target);
  } catch (e) {
    if (e instanceof NbdError) throw e;
    throw new NbdInvalidArgumentError(`bad NBD URI: ${(e as Error).message}`, { cause: e });
  }
  if (uri.tls) {
    const scheme = typeof target === 'string' ? target.split(':')[0] : target instanceof URL ? target.protocol.slice(0, -1) : 'nbds';
    throw new NbdUnsupportedError(`${scheme}: TLS is not supported yet; use nbd:// or nbd+unix://`);
  }
  return uri;
}

/** A transport for `target`, and the export its URI names (undefined for streams and plain addresses' empty path). */
export async function openTransport(target: ConnectTarget, signal?: AbortSignal): Promise<{ transport: Transport; exportName: string }> {
  if (isTransport(target)) return { transport: target, exportName: '' };
  if (isDuplex(target)) return { transport: new NodeTransport(target), exportName: '' };
  const uri = uriOf(target);
  let socket: Socket;
  try {
    socket = await connectSocket(uri, signal);
  } catch (e) {
    if (e instanceof NbdError) throw e;
    const err = e as NodeJS.ErrnoException;
    const where = uri.transport === 'unix' ? uri.socket : `${uri.host}:${uri.port}`;
    throw new NbdSystemError(`cannot connect to ${where}: ${err.message}`, err.code ?? 'EIO', Math.abs(err.errno ?? 0), { cause: e });
  }
  return { transport: new NodeTransport(socket), exportName: uri.exportName };
}
