// nbdkit's truncate filter: a new size for the device below. Shrinking hides its
// end; growing adds bytes that read as zeroes, take only zero writes (EIO
// otherwise, as nbdkit), and ignore trim and zero.
import { after, Errno, isAllZero, isPowerOfTwo, NbdErrnoError, ZERO_HOLE } from '@nbd/protocol';
import { type Device, type DeviceExtent, ExtentList, type ExtentsOptions, type IoOptions, type MaybePromise } from '@nbd/server';
import { addExtents, checkCount, layer, optionError, sizeOf, stackError } from './layer.js';

/** Options of {@link truncate}: one of them. */
export interface TruncateOptions {
  /** The new size in bytes. */
  size?: number;
  /** Round the size up to a multiple of this (a power of two). */
  roundUp?: number;
  /** Round the size down to a multiple of this (a power of two). */
  roundDown?: number;
}

function newSize(total: number, opts: TruncateOptions): number {
  const given = [opts.size, opts.roundUp, opts.roundDown].filter((v) => v !== undefined).length;
  if (given !== 1) throw stackError('truncate', 'give exactly one of size, roundUp, roundDown');
  if (opts.size !== undefined) return checkCount('truncate', 'size', opts.size);
  const n = (opts.roundUp ?? opts.roundDown)!;
  if (!isPowerOfTwo(n)) throw optionError('truncate', opts.roundUp !== undefined ? 'roundUp' : 'roundDown', n, 'is not a power of two');
  return opts.roundUp !== undefined ? Math.ceil(total / n) * n : Math.floor(total / n) * n;
}

/** `base` truncated or extended to a new size. */
export function truncate(base: Device, opts: TruncateOptions): Device {
  const real = sizeOf(base, 'truncate');
  const size = newSize(real, opts);
  /** The part of [at, at + n) that the device below holds. */
  const inside = (at: number, n: number) => Math.max(0, Math.min(n, real - at));
  const each = (at: number, n: number, o: IoOptions, f: (at: number, n: number, o: IoOptions) => MaybePromise<void>) => {
    const k = inside(at, n);
    return k > 0 ? f(at, k, o) : undefined;
  };
  return layer(
    base,
    'truncate',
    { size },
    {
      size,
      readAt: (buf, at, o) => {
        const k = inside(at, buf.length);
        buf.fill(0, k);
        return k > 0 ? base.readAt(k === buf.length ? buf : buf.subarray(0, k), at, o) : undefined;
      },
      lend: base.lend && ((at, n) => (inside(at, n) === n ? base.lend!(at, n) : undefined)),
      writeAt:
        base.writeAt &&
        ((buf, at, o) => {
          const k = inside(at, buf.length);
          if (!isAllZero(buf.subarray(k))) throw new NbdErrnoError(Errno.EIO, `truncate: only zeroes can be written past ${real}`);
          return k > 0 ? base.writeAt!(k === buf.length ? buf : buf.subarray(0, k), at, o) : undefined;
        }),
      sync: base.sync && ((o) => base.sync!(o)),
      trim: base.trim && ((at, n, o) => each(at, n, o, (a, k, x) => base.trim!(a, k, x))),
      zero: base.zero && ((at, n, o) => each(at, n, o, (a, k) => base.zero!(a, k, o))),
      cache: base.cache && ((at, n, o) => each(at, n, o, (a, k, x) => base.cache!(a, k, x))),
      extents: (at, n, o) => extentsBeyond(base, real, at, n, o),
    },
  );
}

/** The base's extents where it has any, holes past its end. */
function extentsBeyond(base: Device, real: number, at: number, n: number, o: ExtentsOptions): MaybePromise<DeviceExtent[]> {
  const list = new ExtentList(at, n);
  const k = Math.max(0, Math.min(n, real - at));
  const head = k === 0 ? [] : base.extents ? base.extents(at, k, o) : [{ length: k, flags: 0 }];
  return after(head, (extents) => {
    // The hole past the base's part only if the base answered all of it: a short answer stays short (the client asks again).
    if (addExtents(list, at, extents, at + k) === at + k) list.push(n - k, ZERO_HOLE);
    return list.extents;
  });
}
