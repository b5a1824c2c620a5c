// One interface for an export in the transmission phase, however many connections
// carry it: `Connection` (one) and `MultiConnection` (several) both implement it, as
// undici's Client and Pool are both a Dispatcher, and `@nbd/copy` takes it. A brand
// (a registered symbol, so that two copies of this package agree) tells one apart
// at run time from the other things an API may accept.
import type { LentBytes } from './commands.js';
import type { ExportInfo } from './export-info.js';
import type { Extent } from './reply-state.js';

/** The `signal` option of every call. */
export interface Signal {
  /** Aborts the call: it rejects with NbdAbortError (`cause`: the signal's reason). See the README for what each call leaves behind. */
  signal?: AbortSignal;
}

/** Options of `write()` and `trim()`. */
export interface WriteOptions extends Signal {
  /** Durable before the reply (NBD_CMD_FLAG_FUA; only when the server advertises it). */
  fua?: boolean;
}

/** Options of `zero()`. */
export interface ZeroOptions extends WriteOptions {
  /** Allocated zeroes, not a hole (NBD_CMD_FLAG_NO_HOLE). */
  noHole?: boolean;
  /** Fail with ENOTSUP unless zeroing is cheap (NBD_CMD_FLAG_FAST_ZERO). */
  fast?: boolean;
}

/** Options of `blockStatus()`. */
export interface BlockStatusOptions extends Signal {
  /** The contexts to describe (default: every one selected). */
  contexts?: string[];
  /** One extent per context, no longer than asked (NBD_CMD_FLAG_REQ_ONE). */
  reqOne?: boolean;
}

/** The brand an ExportHandle carries (`Symbol.for('@nbd/client.ExportHandle')`); see `isExportHandle`. */
export const EXPORT_HANDLE: unique symbol = Symbol.for('@nbd/client.ExportHandle');

/**
 * An export in the transmission phase: its facts, its metadata contexts and the
 * commands. `Connection` is one connection; `MultiConnection` sends each request on
 * its least busy connection and flushes all. Requests a connection cannot take in one
 * go are split; the caller's mistakes are refused before anything is sent.
 */
export interface ExportHandle extends AsyncDisposable {
  /** Marks an ExportHandle for `isExportHandle` (an implementation of your own sets it too). */
  readonly [EXPORT_HANDLE]: true;
  /** What the handshake told us about the export. */
  readonly info: ExportInfo;
  /** Selected metadata contexts, name → id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  /** Connections carrying the requests (requests in flight can usefully grow with them). */
  readonly connectionCount: number;
  /** Requests sent and not yet fully answered. */
  readonly inFlight: number;
  /** Reads `length` bytes at `offset`. A large single-chunk answer is a view into a read arena, not a copy. */
  read(offset: number, length: number, opts?: Signal): Promise<Uint8Array>;
  /**
   * Reads without a copy: the bytes are lent from a read arena and stay valid until
   * `release()`, after which their memory is reused for later replies (no allocation,
   * no garbage). Use them before releasing; `using` releases at scope end. Reads longer
   * than one request, and replies in several chunks, are copied into a buffer of their
   * own (then `release()` does nothing).
   */
  readLent(offset: number, length: number, opts?: Signal): Promise<LentBytes>;
  /** Reads `buf.length` bytes at `offset` into `buf`. After an abort, nothing is written into `buf` any more. */
  readInto(buf: Uint8Array, offset: number, opts?: Signal): Promise<void>;
  /** Writes `buf` at `offset`; `fua` makes it durable before the reply. */
  write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void>;
  /** Discards a range (a hint: its contents are undefined afterwards). */
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  /** Writes zeroes; `noHole` asks for allocated zeroes, `fast` fails with ENOTSUP unless it is cheap. */
  zero(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  /** Asks the server to prefetch a range. */
  cache(offset: number, length: number, opts?: Signal): Promise<void>;
  /**
   * Block status of a range for every selected metadata context (or those named in
   * `contexts`). The length is a hint: the server may describe less (or, for the
   * last extent, more) than asked; requests beyond one maximum payload are clamped.
   */
  blockStatus(offset: number, length: number, opts?: BlockStatusOptions): Promise<Map<string, Extent[]>>;
  /** Makes every completed write durable (on every connection). */
  flush(opts?: Signal): Promise<void>;
  /**
   * Waits for the requests in flight, sends NBD_CMD_DISC and closes (every connection).
   * New requests are refused from the call on. `signal` aborts the wait: the connection
   * is then closed at once, without DISC, and requests still in flight reject with
   * NbdClosedError.
   */
  disconnect(opts?: Signal): Promise<void>;
}

/** `value` is an ExportHandle (a Connection, a MultiConnection, or one of your own carrying the brand). */
export function isExportHandle(value: unknown): value is ExportHandle {
  return typeof value === 'object' && value !== null && EXPORT_HANDLE in value && value[EXPORT_HANDLE] === true;
}
