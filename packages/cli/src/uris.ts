// NBD URIs on the command line: parsed and written with @nbd/protocol (a bad one is a
// usage error); written as libnbd writes them (`nbd+unix:///?socket=/tmp/s`, the port
// always there for TCP) so `$uri` and `nbd info`'s `uri` read like theirs.
import { formatNbdUri, Limits, type NbdUri, NbdUriError, parseNbdUri } from '@nbd/protocol';
import { UsageError } from './errors.js';

/** Parses a URI typed by the user; a malformed one is a UsageError of `command`. */
export function parseUserUri(command: string, text: string): NbdUri {
  try {
    return parseNbdUri(text);
  } catch (e) {
    if (!(e instanceof NbdUriError)) throw e;
    // Not a URI at all: say what one looks like (the parser's own words would repeat the text).
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text))
      throw new UsageError(command, `'${text}' is not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)`, {
        cause: e,
      });
    throw new UsageError(command, `bad NBD URI '${text}': ${e.message}`, { cause: e });
  }
}

/** True when `text` looks like an NBD URI (rather than a file name). */
export function isNbdUri(text: string): boolean {
  return /^nbds?(\+[a-z]+)?:\/\//i.test(text);
}

/** The URI of `exportName` on the server `uri` points at (its TLS parameters kept), as libnbd writes it: port included. */
export function uriForExport(uri: NbdUri, exportName: string): string {
  const params: Record<string, string> = {};
  for (const k of ['tls-certificates', 'tls-psk-file'] as const) if (uri.params[k] !== undefined) params[k] = uri.params[k];
  return formatNbdUri({
    transport: uri.transport,
    tls: uri.tls,
    ...(uri.transport === 'unix' ? { socket: uri.socket! } : { host: uri.host ?? 'localhost', port: uri.port ?? Limits.PORT }),
    exportName,
    ...(uri.user !== undefined ? { user: uri.user } : {}),
    params,
  });
}
