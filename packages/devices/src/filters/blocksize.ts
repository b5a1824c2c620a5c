// nbdkit's blocksize filter: clients may send any alignment and length; the device
// below only ever sees requests aligned to `minBlock` and no longer than `maxData`
// (reads, writes) or `maxLen` (trim, zero, cache, extents). Unaligned heads and
// tails of writes and zeroes are read-modify-written under a block lock;
// unaligned ends of a trim are skipped (trim is advisory). The size is rounded
// down to `minBlock` (truncate({ roundUp }) under it keeps the tail).
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device, DeviceExtent, IoOptions, MaybePromise } from '@nbd/server';
import { BlockLocks } from './block-locks.js';
import { isPowerOfTwo, layer, limitsOf, sizeOf, stackError } from './layer.js';

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
  if (!isPowerOfTwo(minBlock) || minBlock > 65536) throw stackError('blocksize', `minBlock ${minBlock} is not a power of two up to 64 KiB`);
  if (minBlock % below.min !== 0) throw stackError('blocksize', `minBlock ${minBlock} is not a multiple of the device below's minimum block size ${below.min}`);
  if (minBlock > below.max) throw stackError('blocksize', `minBlock ${minBlock} is larger than the device below's maximum payload ${below.max}`);
  const maxData = opts.maxData ?? Math.floor(Math.min(below.max, 64 * 1024 * 1024) / minBlock) * minBlock;
  if (!(maxData >= minBlock && maxData % minBlock === 0)) throw stackError('blocksize', `maxData ${maxData} is not a multiple of minBlock ${minBlock}`);
  if (maxData > below.max) throw stackError('blocksize', `maxData ${maxData} is larger than the device below's maximum payload ${below.max}`);
  const maxLen = opts.maxLen ?? Math.floor(0xffffffff / minBlock) * minBlock;
  if (!(maxLen >= minBlock && maxLen % minBlock === 0)) throw stackError('blocksize', `maxLen ${maxLen} is not a multiple of minBlock ${minBlock}`);
  return { minBlock, maxData, maxLen };
}

/** Calls `f(offset, length)` over `[at, at + n)` in pieces of at most `max`. */
async function inPieces(at: number, n: number, max: number, f: (at: number, n: number) => MaybePromise<void>): Promise<void> {
  for (let done = 0; done < n; done += max) await f(at + done, Math.min(max, n - done));
}

/** `base` adapted so that any client alignment works. */
export function blocksize(base: Device, opts: BlocksizeOptions = {}): Device {
  const { minBlock: B, maxData, maxLen } = limits(base, opts);
  const size = Math.floor(sizeOf(base, 'blocksize') / B) * B;
  const locks = new BlockLocks(opts.locks);
  const down = (x: number) => x - (x % B);
  const up = (x: number) => Math.ceil(x / B) * B;

  /** Read-modify-write of the block at `start`: `patch` changes it in place. */
  const modify = async (start: number, o: IoOptions, patch: (blk: Uint8Array) => void) => {
    const unlock = await locks.lock([start / B]);
    try {
      const blk = new Uint8Array(B);
      await base.readAt(blk, start, o);
      patch(blk);
      await base.writeAt!(blk, start, o);
    } finally {
      unlock();
    }
  };
  /** Splits `[at, at + n)` into an unaligned head, an aligned body and an unaligned tail. */
  const split = (at: number, n: number) => {
    const end = at + n;
    const bodyStart = Math.min(up(at), end);
    const bodyEnd = Math.max(down(end), bodyStart);
    return { bodyStart, bodyEnd, end };
  };
  /** Runs `edge(blockStart, from, to)` for each partial block and `body` over the aligned middle. */
  const eachPart = async (at: number, n: number, edge: (start: number, from: number, to: number) => Promise<void>, body: (a: number, b: number) => Promise<void>) => {
    const { bodyStart, bodyEnd, end } = split(at, n);
    if (at < bodyStart) await edge(down(at), at, Math.min(bodyStart, end));
    if (bodyStart < bodyEnd) await body(bodyStart, bodyEnd);
    // A tail block is never the head block: the head ends at up(at) ≤ down(end) whenever both exist.
    if (bodyEnd < end) await edge(down(end), bodyEnd, end);
  };

  const read = (buf: Uint8Array, at: number, o: IoOptions) =>
    eachPart(
      at,
      buf.length,
      async (start, from, to) => {
        const blk = new Uint8Array(B);
        await base.readAt(blk, start, o);
        buf.set(blk.subarray(from - start, to - start), from - at);
      },
      (a, b) => inPieces(a, b - a, maxData, (p, k) => base.readAt(buf.subarray(p - at, p - at + k), p, o)),
    );
  const write = (buf: Uint8Array, at: number, o: IoOptions) =>
    eachPart(
      at,
      buf.length,
      (start, from, to) => modify(start, o, (blk) => blk.set(buf.subarray(from - at, to - at), from - start)),
      (a, b) => inPieces(a, b - a, maxData, (p, k) => base.writeAt!(buf.subarray(p - at, p - at + k), p, o)),
    );
  const zero = base.zero?.bind(base);
  const extents = base.extents?.bind(base);

  return layer(base, 'blocksize', { minBlock: B, maxData, maxLen, locks: locks.buffer }, {
    size,
    blockSizes: { min: 1, preferred: Math.max(B, limitsOf(base).preferred), max: 0xffffffff },
    readAt: read,
    writeAt: base.writeAt && write,
    sync: base.sync && ((o) => base.sync!(o)),
    trim:
      base.trim &&
      ((at, n, o) => {
        const { bodyStart, bodyEnd } = split(at, n);
        return inPieces(bodyStart, bodyEnd - bodyStart, maxLen, (p, k) => base.trim!(p, k, o));
      }),
    zero:
      zero &&
      base.writeAt &&
      ((at, n, o) => {
        if (o.fast && (at % B !== 0 || (at + n) % B !== 0)) throw new NbdErrnoError(Errno.ENOTSUP, 'blocksize: an unaligned zero needs a read-modify-write');
        return eachPart(
          at,
          n,
          (start, from, to) => modify(start, o, (blk) => blk.fill(0, from - start, to - start)),
          (a, b) => inPieces(a, b - a, maxLen, (p, k) => zero(p, k, o)),
        );
      }),
    cache: base.cache && ((at, n, o) => inPieces(down(at), Math.min(up(at + n), size) - down(at), maxLen, (p, k) => base.cache!(p, k, o))),
    extents:
      extents &&
      (async (at, n, o) => {
        const start = down(at);
        const list = await extents(start, Math.min(Math.min(up(at + n), size) - start, maxLen), o);
        return dropHead(list, at - start, n);
      }),
  });
}

/** Extents from `skip` bytes in, at most `n` bytes long. */
function dropHead(list: DeviceExtent[], skip: number, n: number): DeviceExtent[] {
  const out: DeviceExtent[] = [];
  let left = n;
  for (const e of list) {
    let len = e.length;
    if (skip > 0) {
      const cut = Math.min(skip, len);
      skip -= cut;
      len -= cut;
    }
    if (len <= 0) continue;
    if (left <= 0) break;
    out.push({ length: Math.min(len, left), flags: e.flags });
    left -= len;
  }
  return out;
}
