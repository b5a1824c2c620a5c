// nbdkit's readahead filter: when reads run sequentially, the device below is asked
// to prefetch (cache) what comes next, in a window that doubles while the reads
// stay sequential and starts small again when they jump. The prefetch runs beside
// the read; its failure is ignored (it was only a hint).
import type { Device, IoOptions } from '@nbd/server';
import { layer, limitsOf, optionError, sizeOf, stackError } from './layer.js';

/** Options of {@link readahead}. */
export interface ReadaheadOptions {
  /** First prefetch window in bytes (default 64 KiB). */
  min?: number;
  /** Largest window (default 4 MiB). */
  max?: number;
}

/** `base` with sequential reads prefetched; the device below must have `cache` (put a cache or cow with onCache under it otherwise). */
export function readahead(base: Device, opts: ReadaheadOptions = {}): Device {
  const cache = base.cache?.bind(base);
  if (cache === undefined)
    throw stackError(
      'readahead',
      'the device below cannot prefetch (it has no cache); put cache() or cow({ onCache: true }) under readahead',
    );
  const size = sizeOf(base, 'readahead');
  const min = opts.min ?? 64 * 1024;
  const max = opts.max ?? 4 * 1024 * 1024;
  if (!(min > 0)) throw optionError('readahead', 'min', min, 'must be more than 0 bytes');
  if (!(max >= min)) throw optionError('readahead', 'max', max, `is smaller than the first window (${min} bytes)`);
  const align = limitsOf(base).min;
  let nextRead = -1;
  let window = min;
  /** Prefetched up to here (a window is not asked twice). */
  let ahead = 0;
  const prefetch = (end: number, o: IoOptions) => {
    const from = Math.max(end, ahead);
    const to = Math.min(size, Math.ceil((end + window) / align) * align);
    if (to <= from) return;
    ahead = to;
    const start = from - (from % align);
    void Promise.resolve()
      .then(() => cache(start, to - start, o))
      .catch(() => {});
  };
  return layer(
    base,
    'readahead',
    { min, max },
    {
      readAt: (buf, at, o) => {
        const end = at + buf.length;
        if (at === nextRead) window = Math.min(window * 2, max);
        else {
          window = min;
          ahead = 0;
        }
        nextRead = end;
        prefetch(end, o);
        return base.readAt(buf, at, o);
      },
      lend: base.lend && ((at, n) => base.lend!(at, n)),
      writeAt: base.writeAt && ((buf, at, o) => base.writeAt!(buf, at, o)),
      sync: base.sync && ((o) => base.sync!(o)),
      trim: base.trim && ((at, n, o) => base.trim!(at, n, o)),
      zero: base.zero && ((at, n, o) => base.zero!(at, n, o)),
      cache: (at, n, o) => cache(at, n, o),
      extents: base.extents && ((at, n, o) => base.extents!(at, n, o)),
    },
  );
}
