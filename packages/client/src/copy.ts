// Our nbdcopy: export → export, export → file, file → export. Sparse-aware:
// zero extents (base:allocation) and all-zero blocks are not copied as data but
// zeroed on the destination, or skipped when the destination is known to be zero.
import { type FileHandle, open as openFile } from 'node:fs/promises';
import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { AllocationState, MetaContext, NbdErrnoError } from '@nbd/protocol';
import { Connection } from './connection.js';
import { MultiConnection, connectMulti } from './multi.js';

/** An NBD URI, a file path, `null:` (a sink, destination only), an open connection, or a FileHandle. */
export type CopyEndpoint = string | Connection | MultiConnection | FileHandle;

export interface CopyProgress {
  done: number;
  total: number;
}

export interface CopyOptions {
  /**
   * Bytes per request (default 512 KiB; nbdcopy uses 256 KiB, but each request costs node
   * ~10 µs of JavaScript, so half as many requests measured faster).
   */
  requestSize?: number;
  /** Requests in flight per connection (default 32; nbdcopy uses 64). */
  inFlight?: number;
  /**
   * Connections per NBD endpoint opened from a URI, if the server allows multi-conn. Default:
   * 4, but no more than the CPUs (nbdcopy's rule: on a small machine more connections only
   * add server threads fighting for the same CPUs).
   */
  connections?: number;
  /** The destination already reads as zeroes: zero ranges are skipped, not written. */
  destinationIsZero?: boolean;
  /** Detect zero ranges (block status + zero-block detection). Default true. */
  sparse?: boolean;
  /** Flush the destination at the end (default true). */
  flush?: boolean;
  onProgress?: (p: CopyProgress) => void;
  signal?: AbortSignal;
  /**
   * Threads copying at once (default 1): this one and `threads - 1` worker threads, each with
   * its own connections (`connections` are shared out among them), taking 64 MiB chunks in
   * turn, as nbdcopy's threads do. Only when both endpoints are strings (URIs, paths, null:),
   * which a worker can open again; otherwise the copy runs on this thread.
   */
  threads?: number;
}

export interface CopyResult {
  /** Bytes copied in total (the source size). */
  bytes: number;
  /** Of those, bytes found to be zero and zeroed or skipped instead of written as data. */
  zeroBytes: number;
}

/** @internal */
export interface Source {
  size: number;
  /** NBD connections open (1 for files). */
  connections: number;
  /** The data, and `release` to call once it was written (it may be a view into a read buffer that is reused). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<{ data: Uint8Array; release: () => void }>;
  /** Zero/non-zero runs from `offset`, covering at least one byte; undefined = no map. */
  extents?(offset: number, length: number, signal?: AbortSignal): Promise<{ length: number; zero: boolean }[]>;
  close(): Promise<void>;
}

/** @internal */
export interface Sink {
  size: number | undefined;
  connections: number;
  knownZero: boolean;
  write(buf: Uint8Array, offset: number, signal?: AbortSignal): Promise<void>;
  zero(offset: number, length: number, signal?: AbortSignal): Promise<void>;
  finish(size: number, flush: boolean): Promise<void>;
  close(): Promise<void>;
}

const lanes = (c: Connection | MultiConnection) => (c instanceof MultiConnection ? c.connections.length : 1);
const isUri = (s: string) => /^nbds?(\+[a-z]+)?:\/\//i.test(s);

async function nbdEndpoint(e: CopyEndpoint, opts: CopyOptions, forSource: boolean): Promise<{ conn: Connection | MultiConnection; owned: boolean } | undefined> {
  if (e instanceof Connection || e instanceof MultiConnection) return { conn: e, owned: false };
  if (typeof e === 'string' && isUri(e)) {
    const conn = await connectMulti(e, {
      connections: opts.connections ?? Math.min(4, availableParallelism()),
      metaContexts: forSource && opts.sparse !== false ? [MetaContext.BASE_ALLOCATION] : [],
      signal: opts.signal,
    });
    return { conn, owned: true };
  }
  return undefined;
}

/** @internal */
export async function openSource(e: CopyEndpoint, opts: CopyOptions): Promise<Source> {
  const nbd = await nbdEndpoint(e, opts, true);
  if (nbd) {
    const { conn, owned } = nbd;
    const hasMap = opts.sparse !== false && conn.metaContexts.has(MetaContext.BASE_ALLOCATION);
    return {
      size: conn.info.size,
      connections: lanes(conn),
      read: (off, len, signal) => conn.readLent(off, len, { signal }),
      extents: hasMap
        ? async (off, len, signal) => {
            const m = await conn.blockStatus(off, len, { contexts: [MetaContext.BASE_ALLOCATION], signal });
            return (m.get(MetaContext.BASE_ALLOCATION) ?? []).map((x) => ({ length: x.length, zero: (x.flags & AllocationState.ZERO) !== 0 }));
          }
        : undefined,
      close: async () => {
        if (owned) await conn.disconnect();
      },
    };
  }
  if (e === 'null:') throw new Error('copy: null: is a destination only');
  const owned = typeof e === 'string';
  const fh = typeof e === 'string' ? await openFile(e, 'r') : (e as FileHandle);
  const st = await fh.stat();
  return {
    size: st.size,
    connections: 1,
    read: async (off, len) => {
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, off + got);
        if (bytesRead === 0) {
          buf.fill(0, got); // the file shrank under us: what is gone reads as zeroes
          break;
        }
        got += bytesRead;
      }
      return { data: buf, release: () => {} };
    },
    close: async () => {
      if (owned) await fh.close();
    },
  };
}

/**
 * @internal `joining`: a worker thread's second handle on a destination the copying thread
 * already opened: a file is opened without truncating, and only synced at the end.
 */
export async function openSink(e: CopyEndpoint, opts: CopyOptions, joining = false): Promise<Sink> {
  if (e === 'null:') {
    return { size: undefined, connections: 1, knownZero: true, write: async () => {}, zero: async () => {}, finish: async () => {}, close: async () => {} };
  }
  const nbd = await nbdEndpoint(e, opts, false);
  if (nbd) {
    const { conn, owned } = nbd;
    let zeroes: Uint8Array | undefined;
    return {
      size: conn.info.size,
      connections: lanes(conn),
      knownZero: opts.destinationIsZero ?? false,
      write: (buf, off, signal) => conn.write(buf, off, { signal }),
      zero: async (off, len, signal) => {
        if (conn.info.can.zero) return conn.zero(off, len, { signal });
        zeroes ??= new Uint8Array(Math.min(len, 1 << 20));
        for (let pos = 0; pos < len; pos += zeroes.length) {
          const n = Math.min(zeroes.length, len - pos);
          await conn.write(zeroes.subarray(0, n), off + pos, { signal });
        }
      },
      finish: async (_size, flush) => {
        if (flush && conn.info.can.flush) await conn.flush();
      },
      close: async () => {
        if (owned) await conn.disconnect();
      },
    };
  }
  const owned = typeof e === 'string';
  const fh = typeof e === 'string' ? await openFile(e, joining ? 'r+' : 'w') : (e as FileHandle);
  const st = await fh.stat();
  // A regular file we just created (or an empty one) reads as zeroes: leave holes by not writing.
  const knownZero = opts.destinationIsZero ?? (st.isFile() && st.size === 0);
  let zeroes: Uint8Array | undefined;
  const write = async (buf: Uint8Array, off: number) => {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, off + done);
      done += bytesWritten;
    }
  };
  return {
    size: undefined,
    connections: 1,
    knownZero,
    write,
    zero: async (off, len) => {
      zeroes ??= new Uint8Array(1 << 20);
      for (let pos = 0; pos < len; pos += zeroes.length) await write(zeroes.subarray(0, Math.min(zeroes.length, len - pos)), off + pos);
    },
    finish: async (size, flush) => {
      if (st.isFile() && !joining) await fh.truncate(size);
      if (flush && st.isFile()) await fh.sync();
    },
    close: async () => {
      if (owned) await fh.close();
    },
  };
}

/** True when every byte of `b` is 0 (memcmp against a zero page, not a JS loop). */
const ZERO_PAGE = Buffer.alloc(64 * 1024);
function isZero(b: Uint8Array): boolean {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let pos = 0; pos < buf.length; pos += ZERO_PAGE.length) {
    const n = Math.min(ZERO_PAGE.length, buf.length - pos);
    if (buf.compare(ZERO_PAGE, 0, n, pos, pos + n) !== 0) return false;
  }
  return true;
}

/** Copies all of `src` to `dst`. Endpoints given as URIs or paths are opened and closed here. */
export async function copy(src: CopyEndpoint, dst: CopyEndpoint, opts: CopyOptions = {}): Promise<CopyResult> {
  const requestSize = opts.requestSize ?? 512 * 1024;
  if (!Number.isSafeInteger(requestSize) || requestSize <= 0) throw new RangeError(`requestSize must be a positive integer, got ${requestSize}`);
  const threads = opts.threads ?? 1;
  if (!Number.isSafeInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  const helpers = typeof src === 'string' && typeof dst === 'string' ? threads - 1 : 0;
  // Each thread opens its own connections: the total is shared out.
  const perThread = { ...opts, connections: Math.max(1, Math.ceil((opts.connections ?? Math.min(4, availableParallelism())) / (helpers + 1))) };
  // Both ends connect at once (handshakes are round trips), except that a destination
  // file is opened (and truncated) only once the source is known to be there.
  const fileSink = typeof dst === 'string' && dst !== 'null:' && !isUri(dst);
  const first = openSource(src, perThread);
  if (fileSink) await first;
  const [opened, sunk] = await Promise.allSettled([first, openSink(dst, perThread)]);
  if (opened.status === 'rejected' || sunk.status === 'rejected') {
    await Promise.allSettled([opened.status === 'fulfilled' && opened.value.close(), sunk.status === 'fulfilled' && sunk.value.close()]);
    throw opened.status === 'rejected' ? opened.reason : (sunk as PromiseRejectedResult).reason;
  }
  const source = opened.value;
  const sink = sunk.value;
  try {
    const out = sink;
    const total = source.size;
    if (out.size !== undefined && out.size < total) {
      throw new Error(`copy: the destination (${out.size} bytes) is smaller than the source (${total} bytes)`);
    }
    let done = 0;
    const progress = (n: number) => {
      done += n;
      opts.onProgress?.({ done, total });
    };
    const chunks = new Chunks(total);
    const mine = copyChunks(source, out, chunks, opts, progress);
    const theirs = helpers > 0 ? copyOnWorkers(helpers, src as string, dst as string, out.knownZero, chunks, perThread, progress) : [];
    const stopOnError = (p: Promise<number>) =>
      p.catch((e: unknown) => {
        chunks.stop(); // the other threads finish their chunk and take no more
        throw e;
      });
    const results = await Promise.allSettled([mine, ...theirs].map(stopOnError));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    await out.finish(total, opts.flush !== false);
    let zeroBytes = 0;
    for (const r of results) if (r.status === 'fulfilled') zeroBytes += r.value;
    return { bytes: total, zeroBytes };
  } finally {
    await Promise.allSettled([source.close(), sink.close()]);
  }
}

/** What a copy worker thread gets (copy-worker.ts). */
export interface CopyWorkerData {
  src: string;
  dst: string;
  total: number;
  counter: SharedArrayBuffer;
  opts: Pick<CopyOptions, 'requestSize' | 'inFlight' | 'connections' | 'destinationIsZero' | 'sparse' | 'flush'>;
}

export type FromCopyWorker =
  | { type: 'progress'; bytes: number }
  | { type: 'done'; zeroBytes: number }
  | { type: 'error'; message: string; errno?: number; code?: string };

/** Starts `n` worker threads on the same copy; each settles with its zero bytes. */
function copyOnWorkers(n: number, src: string, dst: string, knownZero: boolean, chunks: Chunks, opts: CopyOptions, progress: (n: number) => void): Promise<number>[] {
  const { requestSize, inFlight, connections, sparse, flush } = opts;
  const workerData: CopyWorkerData = {
    src,
    dst,
    total: chunks.total,
    counter: chunks.counter.buffer as SharedArrayBuffer,
    opts: { requestSize, inFlight, connections, sparse, flush, destinationIsZero: knownZero },
  };
  return Array.from({ length: n }, async () => {
    const w = new Worker(new URL('./copy-worker.js', import.meta.url), { workerData });
    const abort = () => w.postMessage('abort');
    opts.signal?.addEventListener('abort', abort, { once: true });
    try {
      return await new Promise<number>((resolve, reject) => {
        w.on('message', (m: FromCopyWorker) => {
          if (m.type === 'progress') progress(m.bytes);
          else if (m.type === 'done') resolve(m.zeroBytes);
          else reject(m.errno !== undefined ? new NbdErrnoError(m.errno, m.message) : Object.assign(new Error(m.message), { code: m.code }));
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new Error(`copy: a worker thread exited (code ${code}) before finishing`)));
      });
    } finally {
      opts.signal?.removeEventListener('abort', abort);
    }
  });
}

/** Bytes per chunk that a thread takes at a time. */
const CHUNK = 64 * 1024 * 1024;

/** Work shared by the threads of one copy: chunk numbers handed out by an atomic counter. */
export class Chunks {
  readonly counter: Int32Array;
  constructor(
    readonly total: number,
    shared: SharedArrayBuffer = new SharedArrayBuffer(4),
  ) {
    this.counter = new Int32Array(shared);
  }
  /** The next chunk [offset, end) nobody has taken, or undefined when all are. */
  take(): [number, number] | undefined {
    const n = Atomics.add(this.counter, 0, 1);
    const offset = n * CHUNK;
    return n >= 0 && offset < this.total ? [offset, Math.min(this.total, offset + CHUNK)] : undefined;
  }
  /** No chunk is handed out any more (a thread failed). */
  stop(): void {
    Atomics.store(this.counter, 0, -(2 ** 30));
  }
}

/**
 * This thread's share of a copy: takes chunks until none are left, copies them with up to a
 * window of requests in flight. Returns the bytes found to be zero.
 */
export async function copyChunks(source: Source, out: Sink, chunks: Chunks, opts: CopyOptions, progress: (n: number) => void): Promise<number> {
  const requestSize = opts.requestSize ?? 512 * 1024;
  // Every request in flight listens to the signal: a follower of the caller's that may have that many listeners.
  const outer = opts.signal;
  const follower = new AbortController();
  setMaxListeners(0, follower.signal);
  const forward = () => follower.abort(outer?.reason);
  if (outer?.aborted) forward();
  outer?.addEventListener('abort', forward, { once: true });
  try {
    return await copyWithin(source, out, chunks, { ...opts, signal: outer ? follower.signal : undefined }, requestSize, progress);
  } finally {
    outer?.removeEventListener('abort', forward);
  }
}

async function copyWithin(source: Source, out: Sink, chunks: Chunks, opts: CopyOptions, requestSize: number, progress: (n: number) => void): Promise<number> {
  const signal = opts.signal;
  // The window grows with the connections actually open (one if the server refused multi-conn).
  const window = (opts.inFlight ?? 32) * Math.max(source.connections, out.connections);
  const sparse = opts.sparse !== false;
  let zeroBytes = 0;

  // Work items in offset order: data ranges of ≤ requestSize, and whole zero ranges.
  // The chunk being mapped is [next, end); the next one is taken when it is done.
  let next = 0;
  let end = 0;
  let exhausted = false;
  const queue: { offset: number; length: number; zero: boolean }[] = [];
  let mapping: Promise<void> | undefined;
  const refill = async () => {
    if (next >= end) {
      const chunk = chunks.take();
      if (chunk === undefined) {
        exhausted = true;
        return;
      }
      [next, end] = chunk;
    }
    const ext = source.extents && sparse ? await source.extents(next, end - next, signal) : [{ length: end - next, zero: false }];
    const mapped = next + ext.reduce((n, x) => n + x.length, 0);
    let off = next;
    for (const x of ext) {
      const len = Math.min(x.length, end - off);
      if (len <= 0) break;
      if (x.zero) queue.push({ offset: off, length: len, zero: true });
      else for (let p = 0; p < len; p += requestSize) queue.push({ offset: off + p, length: Math.min(requestSize, len - p), zero: false });
      off += len;
    }
    next = Math.min(end, Math.max(mapped, next + 1));
  };
  // One block-status call at a time, started while a window's worth of work is still queued,
  // so the pipe does not run dry while the next extents are asked for.
  let mapError: unknown;
  const prefetch = () => {
    if (mapping !== undefined || exhausted || mapError !== undefined) return;
    mapping = refill().then(
      () => (mapping = undefined),
      (e: unknown) => {
        mapError = e;
        mapping = undefined;
      },
    );
  };
  const take = async () => {
    for (;;) {
      if (queue.length < window) prefetch();
      if (queue.length > 0) return queue.shift();
      if (mapError !== undefined) throw mapError;
      if (mapping === undefined && exhausted) return undefined; // all mapped, all taken
      await mapping;
    }
  };
  const worker = async () => {
    for (;;) {
      signal?.throwIfAborted();
      const item = queue.length >= window ? queue.shift() : await take();
      if (!item) return;
      if (item.zero) {
        zeroBytes += item.length;
        if (!out.knownZero) await out.zero(item.offset, item.length, signal);
      } else {
        const { data, release } = await source.read(item.offset, item.length, signal);
        if (sparse && isZero(data)) {
          release(); // zeroed below: the data is not needed any more
          zeroBytes += item.length;
          if (!out.knownZero) await out.zero(item.offset, item.length, signal);
        } else {
          await out.write(data, item.offset, signal);
          // Only after a successful write: an aborted one may still be queued in the socket.
          release();
        }
      }
      progress(item.length);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.max(1, window) }, worker));
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  return zeroBytes;
}
