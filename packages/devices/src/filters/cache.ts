// nbdkit's cache filter in its read-cache form (cache-on-read, writethrough):
// blocks read from the device below are kept in memory and served from there
// again; writes, trims and zeroes go through to the device below and drop the
// blocks they touch. Least recently used blocks leave first once `maxSize` is
// reached. The cache lives in this thread's memory, so it cannot be shared with
// worker threads (their writes would leave stale blocks here).
import type { Device, IoOptions, MaybePromise } from '@nbd/server';
import { isPowerOfTwo, layer, limitsOf, sizeOf, stackError } from './layer.js';

/** Options of {@link cache}. */
export interface CacheOptions {
  /** Cache block size, a power of two ≥ 4096 (default 64 KiB). */
  blockSize?: number;
  /** Largest amount of memory held, in bytes (default: no limit). */
  maxSize?: number;
}

/** A device with a read cache. */
export type CachedDevice = Device & {
  /** Bytes held in the cache now. */
  readonly cached: number;
};

/** `base` behind a read cache. */
export function cache(base: Device, opts: CacheOptions = {}): CachedDevice {
  const size = sizeOf(base, 'cache');
  const bs = opts.blockSize ?? 64 * 1024;
  const { min, max } = limitsOf(base);
  if (!isPowerOfTwo(bs) || bs < 4096) throw stackError('cache', `block size ${bs} is not a power of two ≥ 4096`);
  if (bs % min !== 0 || bs > max) throw stackError('cache', `block size ${bs} does not fit the device below (minimum ${min}, maximum payload ${max})`);
  const maxBlocks = opts.maxSize === undefined ? Infinity : Math.max(1, Math.floor(opts.maxSize / bs));
  /** Block → its bytes, in least-recently-used order. */
  const blocks = new Map<number, Uint8Array>();
  /** Bumped by every write-like call: a fetch that saw it change does not store what it read. */
  let gen = 0;
  const io: IoOptions = { fua: false, signal: new AbortController().signal };

  const store = (b: number, data: Uint8Array) => {
    blocks.set(b, data);
    while (blocks.size > maxBlocks) blocks.delete(blocks.keys().next().value!);
  };
  const lookup = (b: number) => {
    const data = blocks.get(b);
    if (data !== undefined) {
      blocks.delete(b);
      blocks.set(b, data);
    }
    return data;
  };
  /** Reads blocks [first, last] from the device below, in reads of at most `max` bytes, and keeps them. */
  const fetch = async (first: number, last: number, o: IoOptions): Promise<Map<number, Uint8Array>> => {
    const start = gen;
    const got = new Map<number, Uint8Array>();
    const per = Math.max(1, Math.floor(max / bs));
    for (let b = first; b <= last; b += per) {
      const n = Math.min(per, last - b + 1);
      const buf = new Uint8Array(Math.min(n * bs, size - b * bs));
      await base.readAt(buf, b * bs, o);
      for (let i = 0; i < n; i++) got.set(b + i, buf.subarray(i * bs, Math.min((i + 1) * bs, buf.length)));
    }
    if (gen === start) for (const [b, data] of got) store(b, data);
    return got;
  };
  const read = async (buf: Uint8Array, at: number, o: IoOptions): Promise<void> => {
    const first = Math.floor(at / bs);
    const last = Math.floor((at + buf.length - 1) / bs);
    for (let b = first; b <= last; ) {
      let data = lookup(b);
      let next = b + 1;
      if (data === undefined) {
        // A run of missing blocks: one fetch.
        while (next <= last && !blocks.has(next)) next++;
        const got = await fetch(b, next - 1, o);
        for (let k = b; k < next; k++) copyOut(buf, at, k, got.get(k)!);
      } else copyOut(buf, at, b, data);
      b = next;
    }
  };
  const copyOut = (buf: Uint8Array, at: number, b: number, data: Uint8Array) => {
    const from = Math.max(at, b * bs);
    const to = Math.min(at + buf.length, b * bs + data.length);
    buf.set(data.subarray(from - b * bs, to - b * bs), from - at);
  };
  /** A write-like call: the blocks it touches are dropped before and after it. */
  const through = <T>(at: number, n: number, call: () => MaybePromise<T>): Promise<T> => {
    const drop = () => {
      gen++;
      for (let b = Math.floor(at / bs); b <= Math.floor((at + Math.max(n, 1) - 1) / bs); b++) blocks.delete(b);
    };
    drop();
    return Promise.resolve()
      .then(call)
      .finally(drop);
  };
  const dev = layer(base, 'cache', undefined, {
    readAt: (buf, at, o) => read(buf, at, o),
    writeAt: base.writeAt && ((buf, at, o) => through(at, buf.length, () => base.writeAt!(buf, at, o))),
    sync: base.sync && ((o) => base.sync!(o)),
    trim: base.trim && ((at, n, o) => through(at, n, () => base.trim!(at, n, o))),
    zero: base.zero && ((at, n, o) => through(at, n, () => base.zero!(at, n, o))),
    cache: async (at, n, o) => {
      const first = Math.floor(at / bs);
      const last = Math.floor((at + n - 1) / bs);
      for (let b = first; b <= last; b++) if (!blocks.has(b)) await fetch(b, b, o ?? io);
    },
    extents: base.extents && ((at, n, o) => base.extents!(at, n, o)),
    close: () => blocks.clear(),
  });
  return Object.defineProperty(dev, 'cached', { get: () => [...blocks.values()].reduce((s, d) => s + d.length, 0), enumerable: true }) as CachedDevice;
}
