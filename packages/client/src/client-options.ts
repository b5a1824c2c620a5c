// What `Client.connect()` and `go()` take, and the checks of the limits among it
// (the caller's mistakes refused before anything is sent).
import type { ClientTlsOptions } from '@nbd/node';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Signal } from './export-handle.js';
import { DEFAULT_OPTION_REPLY_LIMITS, type OptionReplyLimits } from './option-engine.js';

/** Options of `Client.connect`. */
export interface ConnectOptions extends Signal {
  /**
   * Milliseconds the server has for each handshake step: connecting and its greeting,
   * then each call (list, info, listMetaContexts, go) with all its options. Past it the
   * call rejects with NbdTimeoutError and the client closes. Default 30 000 (qemu-nbd's
   * --handshake-limit is 10 s); 0 waits forever.
   */
  handshakeTimeout?: number;
  /**
   * TLS (STARTTLS, sent as the first option). `mode`: 'require' (the default once `tls` is
   * given, and for `nbds…` URIs) never falls back to plaintext: a server — or a man in the
   * middle — answering STARTTLS with an error fails the connection; 'allow' goes on in
   * plaintext then (see `Client.tls`); 'off'. Credentials: a `certificates` directory
   * (ca-cert.pem, client-cert.pem, client-key.pem), PEM values, or a `pskFile` with a
   * `username`. Merged over what an `nbds…` URI's parameters say.
   */
  tls?: ClientTlsOptions;
  /**
   * Most replies one option may get before its final one (NBD_OPT_LIST's exports,
   * LIST/SET_META_CONTEXT's contexts, INFO/GO's NBD_INFO_* replies). Default 100 000;
   * past it the call fails with ProtocolError and the client closes, rather than
   * growing memory until `handshakeTimeout` (a server may stream replies forever).
   */
  maxOptionReplies?: number;
  /** Most bytes of reply data one option may get before its final one, as `maxOptionReplies`. Default 32 MiB. */
  maxOptionReplyBytes?: number;
}

/** Options of `go()`. */
export interface GoOptions extends Signal {
  /** Negotiate structured replies (default true). Off for the Linux kernel, which speaks simple replies only. */
  structuredReplies?: boolean;
  /** Negotiate extended headers (default false; opt-in, no Debian peer speaks them yet). */
  extendedHeaders?: boolean;
  /** Metadata contexts to select for BLOCK_STATUS, e.g. ["base:allocation"]. */
  metaContexts?: string[];
  /** Check every rule of the spec about replies (default true); false relaxes the safe ones (see the README). */
  strict?: boolean;
}

/** The default handshake limit, in milliseconds. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 30_000;

/** The `handshakeTimeout` option, checked. */
export function handshakeLimit(ms: number | undefined): number {
  const limit = ms ?? DEFAULT_HANDSHAKE_TIMEOUT;
  if (!Number.isFinite(limit) || limit < 0)
    throw new NbdInvalidArgumentError(`handshakeTimeout must be a non-negative number of milliseconds, got ${ms}`);
  return limit;
}

/** The option-reply bounds of `opts`, checked. */
export function optionReplyLimits(opts: ConnectOptions): OptionReplyLimits {
  const limit = (name: 'maxOptionReplies' | 'maxOptionReplyBytes', fallback: number): number => {
    const n = opts[name] ?? fallback;
    if (n !== Number.POSITIVE_INFINITY && !(Number.isSafeInteger(n) && n >= 1))
      throw new NbdInvalidArgumentError(`${name} must be a whole number ≥ 1 (or Infinity), got ${opts[name]}`);
    return n;
  };
  return {
    replies: limit('maxOptionReplies', DEFAULT_OPTION_REPLY_LIMITS.replies),
    bytes: limit('maxOptionReplyBytes', DEFAULT_OPTION_REPLY_LIMITS.bytes),
  };
}
