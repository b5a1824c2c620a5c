// NBD URIs, per doc/uri.md of the NBD project (plus libnbd's vsock and tls-* extensions):
//   nbd[s]://[user@]host[:port][/export][?query]
//   nbd[s]+unix:///[export]?socket=PATH
//   nbd[s]+vsock://cid[:port][/export]
import { Limits } from './constants.js';
import { NbdInvalidArgumentError } from './errors.js';

/** A parsed NBD URI (`nbd://`, `nbds://`, `nbd+unix://`, `nbd+vsock://`, …): where to connect and what to open. */
export interface NbdUri {
  /** From the scheme: `nbd`/`nbds` is TCP, `+unix` a unix socket, `+vsock` AF_VSOCK. */
  transport: 'tcp' | 'unix' | 'vsock';
  /** `nbds…`: TLS is required. */
  tls: boolean;
  /** TCP host name or address (IPv6 without brackets); vsock CID as a string. */
  host?: string;
  /** TCP or vsock port; defaults to 10809 when formatting. */
  port?: number;
  /** Unix socket path; a leading NUL selects the abstract namespace. */
  socket?: string;
  /** Export name, percent-decoded; "" is the default export. */
  exportName: string;
  /** TLS (PSK) user name, from the userinfo part. */
  user?: string;
  /** Every query parameter except `socket` (e.g. `tls-type`, `tls-hostname`, `tls-verify-peer`, `tls-certificates`, `tls-psk-file`). */
  params: Record<string, string>;
}

/** Query parameters the spec and libnbd define; `parseNbdUri` keeps others in `params` for the caller to diagnose. */
export const KNOWN_URI_PARAMS = ['socket', 'tls-type', 'tls-hostname', 'tls-verify-peer', 'tls-certificates', 'tls-psk-file'] as const;

/** A string that is not a valid NBD URI (code NBD_ERR_INVALID_ARGUMENT). */
export class NbdUriError extends NbdInvalidArgumentError {
  /** `'NbdUriError'`, as shown in stack traces. */
  override name = 'NbdUriError';
}

const SCHEMES: Record<string, { transport: NbdUri['transport']; tls: boolean }> = {
  nbd: { transport: 'tcp', tls: false },
  nbds: { transport: 'tcp', tls: true },
  'nbd+unix': { transport: 'unix', tls: false },
  'nbds+unix': { transport: 'unix', tls: true },
  'nbd+vsock': { transport: 'vsock', tls: false },
  'nbds+vsock': { transport: 'vsock', tls: true },
};

function decode(s: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new NbdUriError(`bad percent-encoding in ${what}: ${s}`);
  }
}

/** Parses an NBD URI. Unknown query parameters are kept in `params`; the spec says to diagnose them (the caller decides). */
export function parseNbdUri(text: string): NbdUri {
  const m = /^([a-z+]+):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/i.exec(text);
  if (!m) throw new NbdUriError(`not an NBD URI: ${text}`);
  const scheme = SCHEMES[m[1]!.toLowerCase()];
  if (!scheme) throw new NbdUriError(`unknown scheme "${m[1]}" (expected nbd, nbds, nbd+unix, nbds+unix, nbd+vsock)`);
  const authority = m[2]!;
  const path = m[3]!;
  const params: Record<string, string> = {};
  for (const part of (m[4] ?? '').split(/[&;]/)) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decode(eq < 0 ? part : part.slice(0, eq), 'query');
    params[key] = decode(eq < 0 ? '' : part.slice(eq + 1), 'query');
  }
  const exportName = path === '' ? '' : decode(path.slice(1), 'export name');
  if (new TextEncoder().encode(exportName).length > Limits.MAX_STRING) throw new NbdUriError('export name exceeds 4096 bytes');
  const uri: NbdUri = { transport: scheme.transport, tls: scheme.tls, exportName, params };

  let hostPort = authority;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    uri.user = decode(authority.slice(0, at), 'user');
    hostPort = authority.slice(at + 1);
  }
  if (scheme.transport === 'unix') {
    if (hostPort !== '') throw new NbdUriError(`a unix socket URI has no host: ${text}`);
    const socket = params.socket;
    if (socket === undefined || socket === '') throw new NbdUriError(`${m[1]} URI needs ?socket=PATH`);
    uri.socket = socket;
    delete params.socket;
    return uri;
  }
  if ('socket' in params) throw new NbdUriError('?socket= is only valid with nbd+unix:// URIs');
  let host = hostPort;
  let port: string | undefined;
  const v6 = /^\[([^\]]*)\](?::(\d*))?$/.exec(hostPort);
  if (v6) {
    host = v6[1]!;
    port = v6[2];
  } else {
    const colon = hostPort.lastIndexOf(':');
    if (colon >= 0) {
      host = hostPort.slice(0, colon);
      port = hostPort.slice(colon + 1);
    }
  }
  // Brackets belong only around an IPv6 address: `nbd://[bad` or `nbd://a]b` is malformed, not a host name.
  if (!v6 && /[[\]]/.test(host)) throw new NbdUriError(`bad host "${host}" (an IPv6 address goes in brackets: [::1])`);
  host = decode(host, 'host');
  if (host === '' && scheme.transport === 'vsock') throw new NbdUriError('nbd+vsock URI needs a CID');
  uri.host = host === '' ? 'localhost' : host;
  if (port !== undefined && port !== '') {
    const n = Number(port);
    if (!/^\d+$/.test(port) || n > 65535) throw new NbdUriError(`bad port "${port}"`);
    uri.port = n;
  }
  return uri;
}

// What a path segment or a query value may hold as it is (RFC 3986 pchar, plus '/'), so
// `?socket=/run/nbd.sock` reads as libnbd and nbdkit write it. In a query value the
// separators parseNbdUri splits on (& ; =) and '+' (a space to form decoders) are escaped.
const PATH_KEEP = /[A-Za-z0-9\-._~!$&'()*+,;=:@/]/;
const QUERY_KEEP = /[A-Za-z0-9\-._~!$'()*,:@/]/;
function encode(s: string, keep: RegExp): string {
  let out = '';
  for (const ch of s) out += keep.test(ch) ? ch : encodeURIComponent(ch);
  return out;
}

/**
 * Formats an NBD URI as libnbd's nbd_get_uri does: a `/` path even for the default
 * export, slashes in the socket path as they are, an IPv6 zone id escaped (RFC 6874:
 * `[fe80::1%25eth0]`). The port is written when `uri.port` is set.
 * `parseNbdUri(formatNbdUri(u))` gives `u` back.
 */
export function formatNbdUri(uri: NbdUri): string {
  const base = uri.transport === 'tcp' ? 'nbd' : uri.transport === 'unix' ? 'nbd+unix' : 'nbd+vsock';
  const scheme = uri.tls ? base.replace(/^nbd/, 'nbds') : base;
  let authority = '';
  if (uri.transport !== 'unix') {
    const host = uri.host ?? 'localhost';
    authority = host.includes(':') ? `[${host.replaceAll('%', '%25')}]` : encodeURIComponent(host);
    if (uri.port !== undefined) authority += `:${uri.port}`;
  }
  if (uri.user !== undefined) authority = `${encodeURIComponent(uri.user)}@${authority}`;
  const query: string[] = [];
  if (uri.transport === 'unix') query.push(`socket=${encode(uri.socket ?? '', QUERY_KEEP)}`);
  for (const [k, v] of Object.entries(uri.params)) query.push(`${encodeURIComponent(k)}=${encode(v, QUERY_KEEP)}`);
  return `${scheme}://${authority}/${encode(uri.exportName, PATH_KEEP)}${query.length ? `?${query.join('&')}` : ''}`;
}
