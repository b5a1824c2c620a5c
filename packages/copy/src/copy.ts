// Our nbdcopy: export → export, export → file, file → export, export → null:, and
// `-` for standard output (destination) or standard input (source). Sparse-aware:
// zero extents (base:allocation) and all-zero blocks are not copied as data but
// zeroed on the destination, or skipped when the destination reads as zeroes.
import { availableParallelism } from 'node:os';
import { NbdInvalidArgumentError, throwIfAborted } from '@nbd/protocol';
import { Chunks } from './chunks.js';
import { type CopyEndpoint, isFilePath, openSink, openSource, reopenable } from './endpoints.js';
import type { EndpointOptions, Sink, Source } from './ends.js';
import { type CopyOptions, type CopyResult, checkOptions } from './options.js';
import { checkSame } from './same.js';
import { copyChunks, copyStream, DEFAULT_REQUEST_SIZE, finish, settleAll } from './window.js';
import { type CopyWorkerData, copyOnWorkers } from './workers.js';

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
