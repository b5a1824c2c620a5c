// NBD URIs on the command line: parsed with @nbd/protocol (a bad one is a usage
// error), and written the way libnbd and nbdkit write them (`nbd+unix:///?socket=/tmp/s`,
// slashes left as they are) so `$uri` and `nbd info`'s `uri` read like theirs.
import { Limits, type NbdUri, NbdUriError, parseNbdUri } from '@nbd/protocol';
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

// Characters a URI path or query may hold as they are (RFC 3986 pchar plus '/' and '?').
const KEEP = /[A-Za-z0-9\-._~!$'()*+,;=:@/]/;

function percentEncode(text: string, keepAmp: boolean): string {
  let out = '';
  for (const ch of text) out += KEEP.test(ch) || (keepAmp && ch === '&') ? ch : encodeURIComponent(ch);
  return out;
}

/** What a URI is written from. */
export interface UriParts {
  tls?: boolean;
  /** TCP host and port, or a unix socket path. */
  host?: string;
  port?: number;
  socket?: string;
  exportName: string;
  user?: string;
  /** Extra query parameters (tls-certificates, tls-psk-file, …), in order. */
  params?: Record<string, string>;
}

/**
 * An NBD URI as libnbd's nbd_get_uri and nbdkit's `$uri` write it: the port always
 * present for TCP, a `/` path even for the default export, the socket path unescaped.
 */
export function formatUri(p: UriParts): string {
  const unix = p.socket !== undefined;
  const scheme = (p.tls ? 'nbds' : 'nbd') + (unix ? '+unix' : '');
  let authority = '';
  if (!unix) {
    const host = p.host ?? 'localhost';
    authority = `${host.includes(':') ? `[${host}]` : host}:${p.port ?? Limits.PORT}`;
  }
  if (p.user !== undefined) authority = `${encodeURIComponent(p.user)}@${authority}`;
  const query: string[] = [];
  if (unix) query.push(`socket=${percentEncode(p.socket!, false)}`);
  for (const [k, v] of Object.entries(p.params ?? {})) query.push(`${k}=${percentEncode(v, false)}`);
  return `${scheme}://${authority}/${percentEncode(p.exportName, false)}${query.length ? `?${query.join('&')}` : ''}`;
}

/** The URI of `exportName` on the server `uri` points at (its TLS parameters kept). */
export function uriForExport(uri: NbdUri, exportName: string): string {
  const params: Record<string, string> = {};
  for (const k of ['tls-certificates', 'tls-psk-file'] as const) if (uri.params[k] !== undefined) params[k] = uri.params[k];
  return formatUri({
    tls: uri.tls,
    ...(uri.transport === 'unix' ? { socket: uri.socket! } : { host: uri.host ?? 'localhost', port: uri.port ?? Limits.PORT }),
    exportName,
    ...(uri.user !== undefined ? { user: uri.user } : {}),
    params,
  });
}
