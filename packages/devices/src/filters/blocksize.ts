// nbdkit's blocksize filter: clients may send any alignment and length; the device
// below only ever sees requests aligned to `minBlock` and no longer than `maxData`
// (reads, writes) or `maxLen` (trim, zero, cache, extents). Unaligned heads and
// tails of writes and zeroes are read-modify-written under a block lock;
// unaligned ends of a trim are skipped (trim is advisory). The size is rounded
// down to `minBlock` (truncate({ roundUp }) under it keeps the tail).
import { Errno, isPowerOfTwo, NbdErrnoError } from '@nbd/protocol';
import {
  type Device,
  type DeviceExtent,
  ExtentList,
  type ExtentsOptions,
  type IoOptions,
  type MaybePromise,
  type ZeroOptions,
} from '@nbd/server';
import { BlockLocks } from './block-locks.js';
import { addExtents, layer, limitsOf, optionError, sizeOf } from './layer.js';

/** Options of {@link blocksize}. */
export interface BlocksizeOptions {
  /** Alignment the device below needs: a power of two up to 64 KiB (default: its minimum block size). */
  minBlock?: number;
  /** Longest read or write passed down (default: the smaller of its maximum payload and 64 MiB). */
  maxData?: number;
  /** Longest trim, zero, cache or extents passed down (default: 4 GiB - 1, rounded down to minBlock). */
  maxLen?: number;
  /** Internal (worker threads): the block locks of the same filter in another thread. */
  locks?: SharedArrayBuffer;
}

interface Limits {
  minBlock: number;
  maxData: number;
  maxLen: number;
}

function limits(base: Device, opts: BlocksizeOptions): Limits {
  const below = limitsOf(base);
  const minBlock = opts.minBlock ?? below.min;
  const bad = (option: keyof Limits, value: number, why: string) => optionError('blocksize', option, value, why);
  if (!isPowerOfTwo(minBlock) || minBlock > 65536) throw bad('minBlock', minBlock, 'is not a power of two up to 64 KiB');
  if (minBlock % below.min !== 0)
    throw bad('minBlock', minBlock, `is not a multiple of the device below's minimum block size ${below.min}`);
  if (minBlock > below.max) throw bad('minBlock', minBlock, `is larger than the device below's maximum payload ${below.max}`);
  const maxData = opts.maxData ?? Math.floor(Math.min(below.max, 64 * 1024 * 1024) / minBlock) * minBlock;
  if (!(maxData >= minBlock && maxData % minBlock === 0))
    throw bad('maxData', maxData, `is not a positive multiple of the minimum block size ${minBlock}`);
  if (maxData > below.max) throw bad('maxData', maxData, `is larger than the device below's maximum payload ${below.max}`);
  const maxLen = opts.maxLen ?? Math.floor(0xffffffff / minBlock) * minBlock;
  if (!(maxLen >= minBlock && maxLen % minBlock === 0))
    throw bad('maxLen', maxLen, `is not a positive multiple of the minimum block size ${minBlock}`);
  return { minBlock, maxData, maxLen };
}

/** Calls `f(offset, length)` over `[at, at + n)` in pieces of at most `max`. */
async function inPieces(at: number, n: number, max: number, f: (at: number, n: number) => MaybePromise<void>): Promise<void> {
  for (let done = 0; done < n; done += max) await f(at + done, Math.min(max, n - done));
}

/** `base` adapted so that any client alignment works. */
export function blocksize(base: Device, opts: BlocksizeOptions = {}): Device {
  return new Adapter(base, limits(base, opts), new BlockLocks(opts.locks)).device;
}

/** The parts of a request: an unaligned head, an aligned body, an unaligned tail. */
type Edge = (start: number, from: number, to: number) => Promise<void>;

class Adapter {
  readonly device: Device;
  private readonly B: number;
  private readonly size: number;

  constructor(
    private readonly base: Device,
    private readonly lim: Limits,
    private readonly locks: BlockLocks,
  ) {
    this.B = lim.minBlock;
    this.size = Math.floor(sizeOf(base, 'blocksize') / this.B) * this.B;
    const { minBlock, maxData, maxLen } = lim;
    const writable = base.writeAt !== undefined;
    this.device = layer(
      base,
      'blocksize',
      { minBlock, maxData, maxLen, locks: locks.buffer },
      {
        size: this.size,
        blockSizes: { min: 1, preferred: Math.max(minBlock, limitsOf(base).preferred), max: 0xffffffff },
        readAt: (buf, at, o) => this.read(buf, at, o),
        writeAt: writable ? (buf, at, o) => this.write(buf, at, o) : undefined,
        sync: base.sync && ((o) => base.sync!(o)),
        trim: base.trim && ((at, n, o) => this.trim(at, n, o)),
        zero: base.zero && writable ? (at, n, o) => this.zero(at, n, o) : undefined,
        cache: base.cache && ((at, n, o) => this.cache(at, n, o)),
        extents: base.extents && ((at, n, o) => this.extents(at, n, o)),
      },
    );
  }

  private down(x: number): number {
    return x - (x % this.B);
  }

  private up(x: number): number {
    return Math.ceil(x / this.B) * this.B;
  }

  /** `[at, at + n)` as an unaligned head, an aligned body `[bodyStart, bodyEnd)` and an unaligned tail. */
  private split(at: number, n: number): { bodyStart: number; bodyEnd: number; end: number } {
    const end = at + n;
    const bodyStart = Math.min(this.up(at), end);
    return { bodyStart, bodyEnd: Math.max(this.down(end), bodyStart), end };
  }

  /** Runs `edge(blockStart, from, to)` for each partial block and `body` over the aligned middle. */
  private async eachPart(at: number, n: number, edge: Edge, body: (a: number, b: number) => Promise<void>): Promise<void> {
    const { bodyStart, bodyEnd, end } = this.split(at, n);
    if (at < bodyStart) await edge(this.down(at), at, Math.min(bodyStart, end));
    if (bodyStart < bodyEnd) await body(bodyStart, bodyEnd);
    // A tail block is never the head block: the head ends at up(at) ≤ down(end) whenever both exist.
    if (bodyEnd < end) await edge(this.down(end), bodyEnd, end);
  }

  /** Read-modify-write of the block at `start` under its lock: `patch` changes it in place. */
  private async modify(start: number, o: IoOptions, patch: (blk: Uint8Array) => void): Promise<void> {
    const unlock = await this.locks.lock([start / this.B]);
    try {
      const blk = new Uint8Array(this.B);
      await this.base.readAt(blk, start, o);
      patch(blk);
      await this.base.writeAt!(blk, start, o);
    } finally {
      unlock();
    }
  }

  private read(buf: Uint8Array, at: number, o: IoOptions): Promise<void> {
    const edge: Edge = async (start, from, to) => {
      const blk = new Uint8Array(this.B);
      await this.base.readAt(blk, start, o);
      buf.set(blk.subarray(from - start, to - start), from - at);
    };
    return this.eachPart(at, buf.length, edge, (a, b) =>
      inPieces(a, b - a, this.lim.maxData, (p, k) => this.base.readAt(buf.subarray(p - at, p - at + k), p, o)),
    );
  }

  private write(buf: Uint8Array, at: number, o: IoOptions): Promise<void> {
    const edge: Edge = (start, from, to) => this.modify(start, o, (blk) => blk.set(buf.subarray(from - at, to - at), from - start));
    return this.eachPart(at, buf.length, edge, (a, b) =>
      inPieces(a, b - a, this.lim.maxData, (p, k) => this.base.writeAt!(buf.subarray(p - at, p - at + k), p, o)),
    );
  }

  /** Only the aligned middle is trimmed (trim is advisory). */
  private trim(at: number, n: number, o: IoOptions): Promise<void> {
    const { bodyStart, bodyEnd } = this.split(at, n);
    return inPieces(bodyStart, bodyEnd - bodyStart, this.lim.maxLen, (p, k) => this.base.trim!(p, k, o));
  }

  private zero(at: number, n: number, o: ZeroOptions): Promise<void> {
    if (o.fast && (at % this.B !== 0 || (at + n) % this.B !== 0))
      throw new NbdErrnoError(Errno.ENOTSUP, 'blocksize: an unaligned zero needs a read-modify-write');
    const edge: Edge = (start, from, to) => this.modify(start, o, (blk) => blk.fill(0, from - start, to - start));
    return this.eachPart(at, n, edge, (a, b) => inPieces(a, b - a, this.lim.maxLen, (p, k) => this.base.zero!(p, k, o)));
  }

  private cache(at: number, n: number, o: IoOptions): Promise<void> {
    const start = this.down(at);
    return inPieces(start, Math.min(this.up(at + n), this.size) - start, this.lim.maxLen, (p, k) => this.base.cache!(p, k, o));
  }

  /** The extents of the aligned range around the request, cut to the request. */
  private async extents(at: number, n: number, o: ExtentsOptions): Promise<DeviceExtent[]> {
    const start = this.down(at);
    const list = new ExtentList(at, n);
    addExtents(list, start, await this.base.extents!(start, Math.min(Math.min(this.up(at + n), this.size) - start, this.lim.maxLen), o));
    return list.extents;
  }
}
