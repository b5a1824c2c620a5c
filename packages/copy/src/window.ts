// One thread's share of a copy: it takes 64 MiB chunks until none are left and
// copies each with a window of requests in flight. Zero extents (from the source's
// map) and all-zero blocks are zeroed on the destination, or skipped when it reads
// as zeroes already. A source without offsets (standard input) is copied in order.
import { isAllZero, NbdInvalidArgumentError, throwIfAborted } from '@nbd/protocol';
import type { Chunks } from './chunks.js';
import { inContext, markPlaced, type Step } from './context.js';
import type { Sink, Source } from './ends.js';

/** What the copy loop needs of the copy's options. */
export interface WindowOptions {
  requestSize?: number;
  inFlight?: number;
  /** Bytes in flight per connection at most (nbdcopy's --queue-size). */
  queueSize?: number;
  sparse?: boolean;
  /** Zero runs looked for in read data, in bytes (nbdcopy's --sparse=N; 0: none; default 4096). */
  sparseSize?: number;
  signal?: AbortSignal;
}

/** Default bytes per request: nbdcopy uses 256 KiB, but each request costs node ~10 µs of JavaScript, so half as many measured faster. */
export const DEFAULT_REQUEST_SIZE = 512 * 1024;
/** Default requests in flight per connection (nbdcopy: 64). */
export const DEFAULT_IN_FLIGHT = 32;

interface Item {
  offset: number;
  length: number;
  zero: boolean;
}

/**
 * Work items in offset order: data ranges of at most a request, and whole zero ranges.
 * The chunk being mapped is [next, end); the next chunk is taken when it is done. One
 * block-status call at a time, started while a window's worth of work is still queued,
 * so the pipe does not run dry while the next extents are asked for.
 */
class WorkQueue {
  private next = 0;
  private end = 0;
  private exhausted = false;
  private readonly queue: Item[] = [];
  private mapping: Promise<void> | undefined;
  private mapError: unknown;

  constructor(
    private readonly source: Source,
    private readonly chunks: Chunks,
    private readonly sparse: boolean,
    private readonly requestSize: number,
    private readonly window: number,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** An item at once while a window's worth is queued (no await per item), else undefined. */
  takeNow(): Item | undefined {
    return this.queue.length >= this.window ? this.queue.shift() : undefined;
  }

  /** The next item, or undefined when everything was taken. */
  async take(): Promise<Item | undefined> {
    for (;;) {
      if (this.queue.length < this.window) this.prefetch();
      if (this.queue.length > 0) return this.queue.shift();
      if (this.mapError !== undefined) throw this.mapError;
      if (this.mapping === undefined && this.exhausted) return undefined; // all mapped, all taken
      await this.mapping;
    }
  }

  private prefetch(): void {
    if (this.mapping !== undefined || this.exhausted || this.mapError !== undefined) return;
    this.mapping = this.refill().then(
      () => (this.mapping = undefined),
      (e: unknown) => {
        this.mapError = e;
        this.mapping = undefined;
      },
    );
  }

  private async refill(): Promise<void> {
    if (this.next >= this.end) {
      const chunk = this.chunks.take();
      if (chunk === undefined) {
        this.exhausted = true;
        return;
      }
      [this.next, this.end] = chunk;
    }
    const { next, end } = this;
    let ext = [{ length: end - next, zero: false }];
    if (this.source.extents && this.sparse) {
      try {
        ext = await this.source.extents(next, end - next, this.signal);
      } catch (e) {
        throw inContext(e, { op: 'mapping', endpoint: this.source.name ?? 'the source', offset: next, length: end - next });
      }
    }
    let off = next;
    for (const x of ext) {
      const len = Math.min(x.length, end - off);
      if (len <= 0) break;
      if (x.zero) this.queue.push({ offset: off, length: len, zero: true });
      else
        for (let p = 0; p < len; p += this.requestSize)
          this.queue.push({ offset: off + p, length: Math.min(this.requestSize, len - p), zero: false });
      off += len;
    }
    this.next = Math.min(end, Math.max(off, next + 1));
  }
}

/** Requests in flight per connection: `inFlight`, capped by `queueSize` bytes (at least one). */
export function perConnection(opts: WindowOptions): number {
  const requests = opts.inFlight ?? DEFAULT_IN_FLIGHT;
  if (opts.queueSize === undefined) return requests;
  return Math.max(1, Math.min(requests, Math.floor(opts.queueSize / (opts.requestSize ?? DEFAULT_REQUEST_SIZE))));
}

/** Zero runs of read data are looked for in blocks of this many bytes by default (nbdcopy's --sparse default). */
export const DEFAULT_SPARSE_SIZE = 4096;

/** Bytes of the zero runs looked for in read data: 0 for none. */
function zeroBlockOf(opts: WindowOptions): number {
  if (opts.sparse === false) return 0;
  return opts.sparseSize ?? DEFAULT_SPARSE_SIZE;
}

/** This thread's share of a copy (chunks taken until none are left). Returns the bytes found to be zero. */
export async function copyChunks(
  source: Source,
  out: Sink,
  chunks: Chunks,
  opts: WindowOptions,
  progress: (n: number) => void,
): Promise<number> {
  const requestSize = opts.requestSize ?? DEFAULT_REQUEST_SIZE;
  const signal = opts.signal;
  const zeroBlock = zeroBlockOf(opts);
  // The window grows with the connections actually open (one if the server refused multi-conn).
  const window = Math.max(1, perConnection(opts) * Math.max(source.connections, out.connections));
  const work = new WorkQueue(source, chunks, opts.sparse !== false, requestSize, window, signal);
  let zeroBytes = 0;
  const from = source.name ?? 'the source';
  const to = out.name ?? 'the destination';
  const worker = async () => {
    let step: Step | undefined;
    try {
      for (;;) {
        throwIfAborted(signal, 'copy');
        step = undefined; // a mapping error says where itself
        const item = work.takeNow() ?? (await work.take());
        if (item === undefined) return;
        const { offset, length } = item;
        if (item.zero) {
          step = { op: 'zeroing', endpoint: to, offset, length };
          zeroBytes += length;
          if (!out.knownZero) await out.zero(offset, length, signal);
        } else {
          step = { op: 'reading', endpoint: from, offset, length };
          const { data, release } = await source.read(offset, length, signal);
          const zero = await putData(out, data, offset, zeroBlock, signal, step); // not `zeroBytes += await`: workers interleave
          zeroBytes += zero;
          release(); // only after a successful write: an aborted one may still be queued in the transport
        }
        progress(length);
      }
    } catch (e) {
      throw inContext(e, step);
    }
  };
  await settleAll(Array.from({ length: window }, worker));
  return zeroBytes;
}

/** A non-zero byte among the first and last 8 of [start, end): most data blocks are settled without isAllZero's native call. */
function edgesHoldData(data: Uint8Array, start: number, end: number): boolean {
  let bits = 0;
  for (let i = 0; i < 8 && start + i < end; i++) bits |= data[start + i]! | data[end - 1 - i]!;
  return bits !== 0;
}

/** Data and zero runs of `data`, looked at in blocks of `block` bytes from its start (0: all of it is data). */
export function zeroRuns(data: Uint8Array, block: number): { start: number; end: number; zero: boolean }[] {
  if (block <= 0) return [{ start: 0, end: data.length, zero: false }];
  const runs: { start: number; end: number; zero: boolean }[] = [];
  for (let start = 0; start < data.length; start += block) {
    const end = Math.min(data.length, start + block);
    const zero = !edgesHoldData(data, start, end) && isAllZero(data.subarray(start, end));
    const last = runs.at(-1);
    if (last !== undefined && last.zero === zero) last.end = end;
    else runs.push({ start, end, zero });
  }
  return runs;
}

/**
 * Writes `data`, read from `offset`, to `out`: its data runs as writes, its zero runs
 * (of `zeroBlock` bytes or more) zeroed, or skipped where the destination reads as
 * zeroes. `step` is kept saying what is under way. Returns the zero bytes.
 */
async function putData(out: Sink, data: Uint8Array, offset: number, zeroBlock: number, signal: AbortSignal | undefined, step: Step) {
  let zeroes = 0;
  for (const { start, end, zero } of zeroRuns(data, zeroBlock)) {
    Object.assign(step, {
      op: zero ? 'zeroing' : 'writing',
      endpoint: out.name ?? 'the destination',
      offset: offset + start,
      length: end - start,
    });
    if (!zero) await out.write(end - start === data.length ? data : data.subarray(start, end), offset + start, signal);
    else {
      zeroes += end - start;
      if (!out.knownZero) await out.zero(offset + start, end - start, signal);
    }
  }
  return zeroes;
}

/**
 * A source without offsets (standard input): read in order to its end, written in
 * requests of `requestSize` with up to a window in flight. Returns the bytes copied
 * and those found to be zero.
 */
export async function copyStream(
  source: Source,
  out: Sink,
  opts: WindowOptions,
  progress: (n: number) => void,
): Promise<{ bytes: number; zeroBytes: number }> {
  const requestSize = opts.requestSize ?? DEFAULT_REQUEST_SIZE;
  const window = Math.max(1, perConnection(opts) * out.connections);
  const zeroBlock = zeroBlockOf(opts);
  const inFlight = new Set<Promise<void>>();
  let offset = 0;
  let zeroBytes = 0;
  let failed: unknown;
  const put = async (block: Uint8Array, at: number) => {
    if (out.size !== undefined && at + block.length > out.size) {
      throw markPlaced(
        new NbdInvalidArgumentError(
          `copy: the destination (${out.size} bytes) is smaller than the source (more than ${at + block.length} bytes)`,
        ),
      );
    }
    const step: Step = { op: 'writing', endpoint: out.name ?? 'the destination', offset: at, length: block.length };
    try {
      const zero = await putData(out, block, at, zeroBlock, opts.signal, step);
      zeroBytes += zero;
    } catch (e) {
      throw inContext(e, step);
    }
    progress(block.length);
  };
  const send = async (block: Uint8Array) => {
    const p = put(block, offset).catch((e: unknown) => {
      failed ??= e;
    });
    offset += block.length;
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    while (inFlight.size >= window) await Promise.race(inFlight);
    if (failed !== undefined) throw failed;
  };
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  try {
    for await (const chunk of source.stream!) {
      throwIfAborted(opts.signal, 'copy');
      pending.push(chunk as Uint8Array);
      pendingBytes += (chunk as Uint8Array).length;
      while (pendingBytes >= requestSize) {
        const all = Buffer.concat(pending, pendingBytes);
        await send(all.subarray(0, requestSize));
        pending = [all.subarray(requestSize)];
        pendingBytes -= requestSize;
      }
    }
  } catch (e) {
    throw inContext(e, { op: 'reading', endpoint: source.name ?? 'the source', offset: offset + pendingBytes });
  }
  if (pendingBytes > 0) await send(Buffer.concat(pending, pendingBytes));
  await Promise.all(inFlight);
  if (failed !== undefined) throw failed;
  return { bytes: offset, zeroBytes };
}

/** All written: the destination's final size set, flushed if asked; a failure says where. */
export async function finish(out: Sink, size: number, flush: boolean): Promise<void> {
  try {
    await out.finish(size, flush);
  } catch (e) {
    throw inContext(e, { op: 'finishing', endpoint: out.name ?? 'the destination' });
  }
}

/** Waits for every job; throws the first failure (none goes unobserved). */
export async function settleAll(jobs: Promise<unknown>[]): Promise<unknown[]> {
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value);
}
