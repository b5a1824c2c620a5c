// What copy() takes and gives back: its options (nbdcopy's, by their names here),
// checked before anything is opened, its progress and its result.
import type { ClientTlsOptions } from '@nbd/client';
import { isPowerOfTwo, NbdInvalidArgumentError } from '@nbd/protocol';

/** Progress of a copy: bytes done of the total. */
export interface CopyProgress {
  /** Bytes finished so far: written to the destination, or zeroed there (or skipped, if already zero). */
  done: number;
  /** The source's size; for standard input (size unknown), the destination's size if it has one, else `done`. */
  total: number;
}

/** Options of `copy()`. */
export interface CopyOptions {
  /**
   * Bytes per request (default 512 KiB; nbdcopy uses 256 KiB, but each request costs node
   * ~10 µs of JavaScript, so half as many requests measured faster).
   */
  requestSize?: number;
  /** Requests in flight per connection (default 32; nbdcopy uses 64). */
  inFlight?: number;
  /**
   * Bytes in flight per connection at most (nbdcopy's --queue-size): caps `inFlight`
   * for large requests. Default: no cap beyond `inFlight`.
   */
  queueSize?: number;
  /** One request at a time on one connection and one thread (nbdcopy's --synchronous): slow, for debugging. */
  synchronous?: boolean;
  /**
   * Connections per NBD endpoint opened here, if the server allows multi-conn. Default:
   * 4, but no more than the CPUs (nbdcopy's rule: on a small machine more connections only
   * add server threads fighting for the same CPUs).
   */
  connections?: number;
  /** The destination already reads as zeroes: zero ranges are skipped, not written. */
  destinationIsZero?: boolean;
  /** Detect zero ranges (block status + zero-block detection). Default true. */
  sparse?: boolean;
  /**
   * Read data is looked at in blocks of this many bytes, and all-zero ones are zeroed
   * (or skipped) instead of written (nbdcopy's --sparse=N). 0 looks for none (the
   * source's map is still used). Default 4096, as nbdcopy's.
   */
  sparseSize?: number;
  /**
   * Ask an NBD source for its allocation map (base:allocation). Default true; false
   * still finds all-zero blocks by reading them (nbdcopy's --no-extents).
   */
  extents?: boolean;
  /**
   * Zero ranges stay allocated on the destination (nbdcopy's --allocated): NBD
   * WRITE_ZEROES with NO_HOLE, zero bytes written in files, never left as holes even
   * in a new file. `destinationIsZero` still skips them.
   */
  allocated?: boolean;
  /** Flush the destination at the end (default true). */
  flush?: boolean;
  /**
   * Copy even when the destination is the source itself (the same file, block device
   * or export), in place: data rewritten, zero blocks zeroed (holes punched in a file),
   * nothing truncated. Without it such a copy is refused, as it would destroy the data.
   */
  allowSame?: boolean;
  /** TLS for the NBD endpoints opened here, over what their URIs say (`nbds://`, `tls-*` parameters). */
  tls?: ClientTlsOptions;
  /** Called after each request with the bytes done so far. */
  onProgress?: (p: CopyProgress) => void;
  /**
   * Aborts the copy: it rejects with NbdAbortError (`cause`: the signal's reason); what was
   * written stays written, endpoints opened here are closed, worker threads stop.
   */
  signal?: AbortSignal;
  /**
   * Threads copying at once (default 1): this one and `threads - 1` worker threads, each with
   * its own connections (`connections` are shared out among them), taking 64 MiB chunks in
   * turn, as nbdcopy's threads do. Only when both endpoints are strings a worker can open
   * again (URIs, paths, null:); otherwise the copy runs on this thread.
   */
  threads?: number;
}

/** What a copy did. */
export interface CopyResult {
  /** Bytes copied in total (the source size). */
  bytes: number;
  /** Of those, bytes found to be zero and zeroed or skipped instead of written as data. */
  zeroBytes: number;
}

function positiveInteger(v: number | undefined, name: string): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0))
    throw new NbdInvalidArgumentError(`copy: ${name} must be a positive integer, got ${v}`);
}

/** Refuses options that cannot be right, before anything is opened. */
export function checkOptions(opts: CopyOptions): void {
  positiveInteger(opts.requestSize, 'requestSize');
  positiveInteger(opts.threads, 'threads');
  positiveInteger(opts.inFlight, 'inFlight');
  positiveInteger(opts.connections, 'connections');
  positiveInteger(opts.queueSize, 'queueSize');
  const z = opts.sparseSize;
  if (z !== undefined && z !== 0 && !(isPowerOfTwo(z) && z >= 512)) {
    throw new NbdInvalidArgumentError(`copy: sparseSize must be 0 or a power of two of at least 512, got ${z}`);
  }
}
