// nbdkit's offset filter: serves `range` bytes of the device below from `offset`.
// Every call moves by the offset; nothing else changes.
import type { Device } from '@nbd/server';
import { checkCount, layer, limitsOf, optionError, sizeOf } from './layer.js';

/** Options of {@link offset}. */
export interface OffsetOptions {
  /** Where the window starts in the device below (default 0); aligned to its minimum block size. */
  offset?: number;
  /** How many bytes (default: to the end of the device below). */
  range?: number;
}

/** The bytes `[offset, offset + range)` of `base` as a device of `range` bytes. */
export function offset(base: Device, opts: OffsetOptions = {}): Device {
  return window(base, 'offset', opts, opts);
}

/** The offset filter under another name (partition): `options` rebuilds it in a worker thread. */
export function window(base: Device, filter: string, opts: OffsetOptions, options: unknown): Device {
  const total = sizeOf(base, filter);
  const start = checkCount(filter, 'offset', opts.offset ?? 0);
  // Checked before the default range is computed from it (a negative range says nothing to the user).
  if (start > total) throw optionError(filter, 'offset', start, `is past the end of the ${total}-byte device below`);
  const range = checkCount(filter, 'range', opts.range ?? total - start);
  if (start + range > total) {
    const why =
      start === 0
        ? `is larger than the ${total}-byte device below`
        : `from offset ${start} ends at byte ${start + range}, past the end of the ${total}-byte device below`;
    throw optionError(filter, 'range', range, why);
  }
  const { min } = limitsOf(base);
  if (start % min !== 0) throw optionError(filter, 'offset', start, `is not a multiple of the device below's minimum block size ${min}`);
  return layer(base, filter, options, {
    size: range,
    readAt: (buf, at, o) => base.readAt(buf, at + start, o),
    lend: base.lend && ((at, n) => base.lend!(at + start, n)),
    writeAt: base.writeAt && ((buf, at, o) => base.writeAt!(buf, at + start, o)),
    sync: base.sync && ((o) => base.sync!(o)),
    trim: base.trim && ((at, n, o) => base.trim!(at + start, n, o)),
    zero: base.zero && ((at, n, o) => base.zero!(at + start, n, o)),
    cache: base.cache && ((at, n, o) => base.cache!(at + start, n, o)),
    extents: base.extents && ((at, n, o) => base.extents!(at + start, n, o)),
  });
}
