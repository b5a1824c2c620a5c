// nbdkit's cache filter in its read-cache form (cache-on-read, writethrough):
// blocks read from the device below are kept in memory and served from there
// again; writes, trims and zeroes go through to the device below and drop the
// blocks they touch. Least recently used blocks leave first once `maxSize` is
// reached. The cache lives in this thread's memory, so it cannot be shared with
// worker threads (their writes would leave stale blocks here).
import { isPowerOfTwo } from '@nbd/protocol';
import type { Device, IoOptions, MaybePromise } from '@nbd/server';
import { layer, limitsOf, optionError, sizeOf } from './layer.js';

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
  if (!isPowerOfTwo(bs) || bs < 4096) throw optionError('cache', 'blockSize', bs, 'is not a power of two ≥ 4096');
  if (bs % min !== 0 || bs > max)
    throw optionError('cache', 'blockSize', bs, `does not fit the device below (minimum block size ${min}, maximum payload ${max})`);
  const maxBlocks = opts.maxSize === undefined ? Infinity : Math.max(1, Math.floor(opts.maxSize / bs));
  const c = new ReadCache(base, size, bs, Math.max(1, Math.floor(max / bs)), maxBlocks);
  const dev = layer(base, 'cache', undefined, {
    readAt: (buf, at, o) => c.read(buf, at, o),
    writeAt: base.writeAt && ((buf, at, o) => c.through(at, buf.length, () => base.writeAt!(buf, at, o))),
    sync: base.sync && ((o) => base.sync!(o)),
    trim: base.trim && ((at, n, o) => c.through(at, n, () => base.trim!(at, n, o))),
    zero: base.zero && ((at, n, o) => c.through(at, n, () => base.zero!(at, n, o))),
    cache: (at, n, o) => c.prefetch(at, n, o),
    extents: base.extents && ((at, n, o) => base.extents!(at, n, o)),
    close: () => c.clear(),
  });
  return Object.defineProperty(dev, 'cached', { get: () => c.bytes(), enumerable: true }) as CachedDevice;
}

/** The blocks, in least-recently-used order, and how they are filled and dropped. */
class ReadCache {
  private readonly blocks = new Map<number, Uint8Array>();
  /** Bumped by every write-like call: a fetch that saw it change does not keep what it read. */
  private gen = 0;

  constructor(
    private readonly base: Device,
    private readonly size: number,
    private readonly bs: number,
    /** Blocks per read of the device below (its maximum payload). */
    private readonly perRead: number,
    private readonly maxBlocks: number,
  ) {}

  bytes(): number {
    let n = 0;
    for (const d of this.blocks.values()) n += d.length;
    return n;
  }

  clear(): void {
    this.blocks.clear();
  }

  private store(b: number, data: Uint8Array): void {
    this.blocks.set(b, data);
    while (this.blocks.size > this.maxBlocks) this.blocks.delete(this.blocks.keys().next().value!);
  }

  /** A cached block, now the most recently used. */
  private lookup(b: number): Uint8Array | undefined {
    const data = this.blocks.get(b);
    if (data !== undefined) {
      this.blocks.delete(b);
      this.blocks.set(b, data);
    }
    return data;
  }

  /** Reads blocks [first, last] from the device below and keeps them, unless a write came meanwhile. */
  private async fetch(first: number, last: number, o: IoOptions): Promise<Map<number, Uint8Array>> {
    const start = this.gen;
    const got = new Map<number, Uint8Array>();
    const bs = this.bs;
    for (let b = first; b <= last; b += this.perRead) {
      const n = Math.min(this.perRead, last - b + 1);
      const buf = new Uint8Array(Math.min(n * bs, this.size - b * bs));
      await this.base.readAt(buf, b * bs, o);
      for (let i = 0; i < n; i++) got.set(b + i, buf.subarray(i * bs, Math.min((i + 1) * bs, buf.length)));
    }
    if (this.gen === start) for (const [b, data] of got) this.store(b, data);
    return got;
  }

  async read(buf: Uint8Array, at: number, o: IoOptions): Promise<void> {
    const first = Math.floor(at / this.bs);
    const last = Math.floor((at + buf.length - 1) / this.bs);
    for (let b = first; b <= last; ) {
      const data = this.lookup(b);
      let next = b + 1;
      if (data === undefined) {
        // A run of missing blocks: one fetch.
        while (next <= last && !this.blocks.has(next)) next++;
        const got = await this.fetch(b, next - 1, o);
        for (let k = b; k < next; k++) this.copyOut(buf, at, k, got.get(k)!);
      } else this.copyOut(buf, at, b, data);
      b = next;
    }
  }

  private copyOut(buf: Uint8Array, at: number, b: number, data: Uint8Array): void {
    const from = Math.max(at, b * this.bs);
    const to = Math.min(at + buf.length, b * this.bs + data.length);
    buf.set(data.subarray(from - b * this.bs, to - b * this.bs), from - at);
  }

  /** Prefetch: the missing blocks of a range, read and kept. */
  async prefetch(at: number, n: number, o: IoOptions): Promise<void> {
    const last = Math.floor((at + n - 1) / this.bs);
    for (let b = Math.floor(at / this.bs); b <= last; b++) {
      if (this.blocks.has(b)) continue;
      let end = b;
      while (end + 1 <= last && !this.blocks.has(end + 1)) end++;
      await this.fetch(b, end, o);
      b = end;
    }
  }

  /** A write-like call: the blocks it touches are dropped before and after it. */
  through<T>(at: number, n: number, call: () => MaybePromise<T>): Promise<T> {
    const drop = () => {
      this.gen++;
      const last = Math.floor((at + Math.max(n, 1) - 1) / this.bs);
      for (let b = Math.floor(at / this.bs); b <= last; b++) this.blocks.delete(b);
    };
    drop();
    return Promise.resolve().then(call).finally(drop);
  }
}
