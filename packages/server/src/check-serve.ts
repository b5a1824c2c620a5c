// What serve(), listen() and serveTransmission() refuse before any client connects:
// exports that could not be served as given (a client would find out one LIST or GO at
// a time), and options that are malformed or contradict each other. Every refusal is
// an NbdInvalidArgumentError.
import { Limits, NbdInvalidArgumentError } from '@nbd/protocol';
import type { Export } from './device.js';
import type { ServeOptions } from './serve-options.js';

/** A name short enough for a message (names may be 4 KiB long). */
function shortName(name: unknown): string {
  const s = String(name);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/** Export number `i`, for messages. */
function label(e: Export, i: number): string {
  return `export ${i + 1} ("${shortName(e.name)}")`;
}

/** A string the spec allows on the wire: UTF-8 of at most 4096 bytes, no NUL. */
function checkString(value: unknown, what: string): void {
  if (typeof value !== 'string') throw new NbdInvalidArgumentError(`serve: ${what} is not a string`);
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > Limits.MAX_STRING) {
    throw new NbdInvalidArgumentError(`serve: ${what} is ${bytes} bytes of UTF-8; the NBD limit is ${Limits.MAX_STRING}`);
  }
  if (value.includes('\0')) throw new NbdInvalidArgumentError(`serve: ${what} contains a NUL character, which NBD strings must not`);
}

/** Exports every client can be served: names and descriptions the spec allows, names that are unique, sizes within their devices. */
export function checkExports(exports: readonly Export[]): void {
  if (!Array.isArray(exports) || exports.length === 0) throw new NbdInvalidArgumentError('serve: at least one export is needed');
  const names = new Set<string>();
  for (const [i, e] of exports.entries()) {
    const what = label(e, i);
    checkString(e.name, `the name of ${what}`);
    if (e.description !== undefined) checkString(e.description, `the description of ${what}`);
    if (names.has(e.name)) throw new NbdInvalidArgumentError(`serve: two exports are named "${shortName(e.name)}"`);
    names.add(e.name);
    // The empty name selects the first export (the default), so no other export can have it.
    if (e.name === '' && i > 0) throw new NbdInvalidArgumentError(`serve: ${what} has the empty name, which selects export 1`);
    if (!Number.isSafeInteger(e.size) || e.size < 0) throw new NbdInvalidArgumentError(`serve: ${what} has a bad size ${e.size}`);
    if (typeof e.device?.readAt !== 'function') throw new NbdInvalidArgumentError(`serve: ${what} has no device`);
    const dsize = e.device.size;
    if (dsize !== undefined && e.size > dsize) {
      throw new NbdInvalidArgumentError(`serve: ${what} is ${e.size} bytes but its device has only ${dsize}`);
    }
  }
}

/** The TLS mode `opts` asks for ('off' without `tls`). */
export function tlsModeOf(opts: ServeOptions): 'off' | 'on' | 'require' {
  return opts.tls === undefined ? 'off' : (opts.tls.mode ?? 'require');
}

/** Numeric options: [name, smallest allowed, largest allowed]. */
const numbers: [keyof ServeOptions, number, number][] = [
  ['maxConnections', 1, Number.MAX_SAFE_INTEGER],
  ['maxConnectionsPerClient', 1, Number.MAX_SAFE_INTEGER],
  ['handshakeTimeout', 1, 2 ** 31 - 1],
  ['maxPayload', 1, 2 ** 32 - 1],
  ['maxInFlight', 1, Number.MAX_SAFE_INTEGER],
  ['maxInFlightBytes', 1, Number.MAX_SAFE_INTEGER],
  ['keepAlive', 0, 2 ** 31 - 1],
  ['threads', 0, 1024],
];

/** Options that are malformed, or that contradict each other or the exports. */
export function checkOptions(exports: readonly Export[], opts: ServeOptions): void {
  for (const [key, min, max] of numbers) {
    const v = opts[key];
    if (v !== undefined && (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max)) {
      throw new NbdInvalidArgumentError(`serve: ${key} must be an integer from ${min} to ${max}, got ${String(v)}`);
    }
  }
  if (opts.handshake !== undefined && opts.handshake !== 'newstyle' && opts.handshake !== 'oldstyle') {
    throw new NbdInvalidArgumentError(`serve: handshake must be 'newstyle' or 'oldstyle', got '${String(opts.handshake)}'`);
  }
  const mode = tlsModeOf(opts);
  // A misspelt mode would otherwise act as 'on': plaintext for every export not marked tlsOnly.
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') {
    throw new NbdInvalidArgumentError(`serve: tls.mode must be 'off', 'on' or 'require', got '${String(mode)}'`);
  }
  // Oldstyle has no options, so no STARTTLS: refused rather than served in plaintext.
  if (opts.handshake === 'oldstyle' && mode !== 'off') {
    throw new NbdInvalidArgumentError(`serve: an oldstyle handshake has no STARTTLS, so it cannot serve tls mode '${mode}'`);
  }
  // Without TLS a tlsOnly export could never be used, and NOTLS may not answer ERR_TLS_REQD.
  const tlsOnly = exports.findIndex((e) => e.tlsOnly === true);
  if (tlsOnly >= 0 && mode === 'off') {
    throw new NbdInvalidArgumentError(`serve: ${label(exports[tlsOnly]!, tlsOnly)} is tlsOnly, but TLS is off`);
  }
}

/** Everything serve() and listen() check before any client connects. */
export function checkServe(exports: readonly Export[], opts: ServeOptions): void {
  checkExports(exports);
  checkOptions(exports, opts);
}
