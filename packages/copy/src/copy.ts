// Our nbdcopy: export → export, export → file, file → export, export → null:, and
// `-` for standard output (destination) or standard input (source). Sparse-aware:
// zero extents (base:allocation) and all-zero blocks are not copied as data but
// zeroed on the destination, or skipped when the destination reads as zeroes.
import { availableParallelism } from 'node:os';
import type { ClientTlsOptions } from '@nbd/client';
import { NbdInvalidArgumentError, throwIfAborted } from '@nbd/protocol';
import { Chunks } from './chunks.js';
import {
  type CopyEndpoint,
  type EndpointOptions,
  isFilePath,
  openSink,
  openSource,
  reopenable,
  type Sink,
  type Source,
} from './endpoints.js';
import { checkSame } from './same.js';
import { copyChunks, copyStream, DEFAULT_REQUEST_SIZE, finish, settleAll } from './window.js';
import { type CopyWorkerData, copyOnWorkers } from './workers.js';

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

function checkOptions(opts: CopyOptions): void {
  positiveInteger(opts.requestSize, 'requestSize');
  positiveInteger(opts.threads, 'threads');
  positiveInteger(opts.inFlight, 'inFlight');
  positiveInteger(opts.connections, 'connections');
  positiveInteger(opts.queueSize, 'queueSize');
  const z = opts.sparseSize;
  if (z !== undefined && z !== 0 && !(Number.isSafeInteger(z) && z >= 512 && (z & (z - 1)) === 0)) {
    throw new NbdInvalidArgumentError(`copy: sparseSize must be 0 or a power of two of at least 512, got ${z}`);
  }
}

/** Copies all of `src` to `dst`. Endpoints given as URIs, addresses or paths are opened and closed here. */
export async function copy(src: CopyEndpoint, dst: CopyEndpoint, options: CopyOptions = {}): Promise<CopyResult> {
  checkOptions(options);
  const opts = options.synchronous ? { ...options, connections: 1, inFlight: 1, threads: 1 } : options;
  throwIfAborted(opts.signal, 'copy');
  // Before anything is opened: a destination file would be truncated.
  const same = await checkSame(src, dst, opts.allowSame === true);
  const helpers = reopenable(src) && reopenable(dst) ? (opts.threads ?? 1) - 1 : 0;
  // Each thread opens its own connections: the total is shared out.
  const connections = Math.max(1, Math.ceil((opts.connections ?? Math.min(4, availableParallelism())) / (helpers + 1)));
  const perThread = { ...opts, connections, truncate: !same };
  const { source, sink } = await openBoth(src, dst, perThread);
  try {
    let done = 0;
    const total = () => source.size ?? sink.size ?? done;
    const progress = (n: number) => {
      done += n;
      opts.onProgress?.({ done, total: total() });
    };
    if (source.size === undefined) {
      const r = await copyStream(source, sink, opts, progress);
      await finish(sink, r.bytes, opts.flush !== false);
      return r;
    }
    if (sink.size !== undefined && sink.size < source.size) {
      throw new NbdInvalidArgumentError(`copy: the destination (${sink.size} bytes) is smaller than the source (${source.size} bytes)`);
    }
    const chunks = new Chunks(source.size);
    const mine = copyChunks(source, sink, chunks, opts, progress);
    const theirs =
      helpers > 0
        ? copyOnWorkers(
            helpers,
            { src: src as string, dst: dst as string, opts: workerOptions(perThread, sink) },
            chunks,
            opts.signal,
            progress,
          )
        : [];
    const stopOnError = (p: Promise<number>) =>
      p.catch((e: unknown) => {
        chunks.stop(); // the other threads finish their chunk and take no more
        throw e;
      });
    const zeroes = (await settleAll([mine, ...theirs].map(stopOnError))) as number[];
    await finish(sink, source.size, opts.flush !== false);
    return { bytes: source.size, zeroBytes: zeroes.reduce((a, b) => a + b, 0) };
  } finally {
    await Promise.allSettled([source.close(), sink.close()]);
  }
}

/**
 * Both ends connect at once (handshakes are round trips), except that a destination
 * file is opened (and truncated) only once the source is known to be there.
 */
async function openBoth(src: CopyEndpoint, dst: CopyEndpoint, opts: EndpointOptions): Promise<{ source: Source; sink: Sink }> {
  const first = openSource(src, opts);
  if (isFilePath(dst)) await first; // a failing source leaves the destination file untouched
  const [opened, sunk] = await Promise.allSettled([first, openSink(dst, opts)]);
  if (opened.status === 'fulfilled' && sunk.status === 'fulfilled') return { source: opened.value, sink: sunk.value };
  await Promise.allSettled([opened.status === 'fulfilled' && opened.value.close(), sunk.status === 'fulfilled' && sunk.value.close()]);
  throw opened.status === 'rejected' ? opened.reason : (sunk as PromiseRejectedResult).reason;
}

function workerOptions(o: CopyOptions, sink: Sink): CopyWorkerData['opts'] {
  return {
    requestSize: o.requestSize ?? DEFAULT_REQUEST_SIZE,
    inFlight: o.inFlight,
    queueSize: o.queueSize,
    connections: o.connections,
    sparse: o.sparse,
    sparseSize: o.sparseSize,
    extents: o.extents,
    allocated: o.allocated,
    flush: o.flush,
    tls: o.tls,
    destinationIsZero: sink.knownZero,
  };
}
