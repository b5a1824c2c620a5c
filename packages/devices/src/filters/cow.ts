// nbdkit's cow filter: a writable copy-on-write overlay over a device that is never
// written. Blocks (64 KiB by default) are in one of three states: still the base's,
// copied into the overlay (a partial write first reads the rest of the block from
// the base, under a block lock), or zero (trimmed or zeroed: nothing stored). The
// overlay is sparse memory by default, any writable device, or a CowFileOverlay
// (files that survive a crash: flushed writes are there after a restart).
import { Errno, isPowerOfTwo, NbdErrnoError, ZERO_HOLE } from '@nbd/protocol';
import {
  type Device,
  type DeviceExtent,
  ExtentList,
  type ExtentsOptions,
  eachUnit,
  type IoOptions,
  type MaybePromise,
  type ZeroOptions,
} from '@nbd/server';
import { SparseMemoryDevice } from '../memory/sparse-memory-device.js';
import { BlockLocks } from './block-locks.js';
import { CowFileOverlay } from './cow-file-overlay.js';
import { addExtents, layer, limitsOf, optionError, sizeOf, stackError } from './layer.js';

/** Block states. */
const BASE = 0;
const COPIED = 1;
const ZERO = 2;

/** Options of {@link cow}. */
export interface CowOptions {
  /** Block size, a power of two ≥ 4096 (default 64 KiB, or the CowFileOverlay's). */
  blockSize?: number;
  /** Where written blocks go (default: sparse memory, lost with the process). */
  overlay?: Device | CowFileOverlay;
  /** Copy blocks read from the base into the overlay (nbdkit's cow-on-read). */
  onRead?: boolean;
  /** Copy blocks prefetched (NBD_CMD_CACHE) into the overlay (nbdkit's cow-on-cache). */
  onCache?: boolean;
  /** Internal (worker threads): the block locks (and states, unless a CowFileOverlay holds them) of the same cow in another thread. */
  shared?: { states?: SharedArrayBuffer; locks: SharedArrayBuffer };
}

/** A contiguous piece of a request inside one block. */
interface Piece {
  block: number;
  /** Offset of the block's first byte. */
  start: number;
  inBlock: number;
  n: number;
  /** Position within the request. */
  pos: number;
  /** The block's length (the last block may be short). */
  blockLen: number;
}

/** A writable copy-on-write view of `base`; the base is only ever read. */
export function cow(base: Device, opts: CowOptions = {}): Device {
  return new Cow(base, opts).device;
}

class Cow {
  readonly device: Device;
  private readonly size: number;
  private readonly blockSize: number;
  private readonly overlay: Device;
  private readonly file: CowFileOverlay | undefined;
  private readonly states: Uint8Array;
  private readonly locks: BlockLocks;
  private readonly io: IoOptions = { fua: false, signal: new AbortController().signal };
  /** The overlay's writeAt (checked to exist). */
  private readonly put: NonNullable<Device['writeAt']>;

  constructor(
    private readonly base: Device,
    private readonly opts: CowOptions,
  ) {
    this.size = sizeOf(base, 'cow');
    this.file = opts.overlay instanceof CowFileOverlay ? opts.overlay : undefined;
    this.blockSize = opts.blockSize ?? this.file?.blockSize ?? 64 * 1024;
    this.overlay = this.file?.device ?? (opts.overlay as Device | undefined) ?? new SparseMemoryDevice(this.size);
    this.check();
    this.put = this.overlay.writeAt!.bind(this.overlay);
    const blocks = Math.ceil(this.size / this.blockSize);
    this.states = this.file?.states ?? new Uint8Array(opts.shared?.states ?? new SharedArrayBuffer(blocks));
    if (this.states.length !== blocks) throw stackError('cow', `shared states hold ${this.states.length} blocks, not ${blocks}`);
    this.locks = new BlockLocks(opts.shared?.locks);
    this.device = this.build();
  }

  private check(): void {
    const { min, max } = limitsOf(this.base);
    const bs = this.blockSize;
    const bad = (why: string) => optionError('cow', 'blockSize', bs, why);
    if (!isPowerOfTwo(bs) || bs < 4096) throw bad('is not a power of two ≥ 4096');
    if (bs % min !== 0) throw bad(`is not a multiple of the device below's minimum block size ${min}`);
    if (bs > max) throw bad(`is larger than the device below's maximum payload ${max}`);
    if (this.file !== undefined && this.file.blockSize !== bs)
      throw stackError('cow', `the overlay file uses ${this.file.blockSize}-byte blocks, not ${bs}`);
    if (this.overlay.writeAt === undefined || this.overlay.readOnly) throw stackError('cow', 'the overlay is not writable');
    if (this.overlay.size !== undefined && this.overlay.size < this.size)
      throw stackError('cow', `the overlay (${this.overlay.size} bytes) is smaller than the device below (${this.size})`);
  }

  private build(): Device {
    const base = this.base;
    const overlayShare = this.file ? () => this.file!.share() : this.overlay.share?.bind(this.overlay);
    const options =
      overlayShare === undefined
        ? undefined
        : {
            blockSize: this.blockSize,
            onRead: this.opts.onRead,
            onCache: this.opts.onCache,
            overlay: overlayShare(),
            states: this.states.buffer,
            locks: this.locks.buffer,
          };
    return layer(base, 'cow', options, {
      readOnly: false,
      fua: true,
      multiConn: true,
      readAt: (buf, at, o) => this.read(buf, at, o),
      writeAt: (buf, at, o) => this.write(buf, at, o),
      sync: (o) => this.flush(o),
      trim: (at, n, o) => this.trim(at, n, o),
      zero: (at, n, o) => this.zero(at, n, o),
      cache: this.opts.onCache || base.cache ? (at, n, o) => this.cache(at, n, o) : undefined,
      extents: (at, n, o) => this.extents(at, n, o),
      close: () => (this.file ? this.file.close() : this.overlay.close?.()),
    });
  }

  private state(b: number): number {
    return Atomics.load(this.states, b);
  }

  private setState(b: number, s: number): void {
    Atomics.store(this.states, b, s);
    this.file?.changed(b);
  }

  private pieces(offset: number, length: number): Piece[] {
    const out: Piece[] = [];
    const bs = this.blockSize;
    eachUnit(offset, length, bs, (block, inBlock, n, pos) => {
      const start = block * bs;
      out.push({ block, start, inBlock, n, pos, blockLen: Math.min(bs, this.size - start) });
    });
    return out;
  }

  /** Runs of consecutive pieces with the same state: one read per run. */
  private async read(buf: Uint8Array, offset: number, o: IoOptions): Promise<void> {
    const ps = this.pieces(offset, buf.length);
    for (let i = 0; i < ps.length; ) {
      const s = this.state(ps[i]!.block);
      let j = i + 1;
      while (j < ps.length && this.state(ps[j]!.block) === s) j++;
      const from = ps[i]!.pos;
      const to = ps[j - 1]!.pos + ps[j - 1]!.n;
      const part = buf.subarray(from, to);
      if (s === ZERO) part.fill(0);
      else if (s === COPIED) await this.overlay.readAt(part, offset + from, o);
      else {
        await this.base.readAt(part, offset + from, o);
        if (this.opts.onRead) await this.copyWhole(ps.slice(i, j), part, from);
      }
      i = j;
    }
  }

  /** Copies whole blocks just read from the base into the overlay (cow-on-read), if still the base's. */
  private async copyWhole(ps: Piece[], data: Uint8Array, from: number): Promise<void> {
    for (const p of ps) {
      if (p.inBlock !== 0 || p.n !== p.blockLen) continue;
      const unlock = await this.locks.lock([p.block]);
      try {
        if (this.state(p.block) !== BASE) continue;
        await this.put(data.subarray(p.pos - from, p.pos - from + p.n), p.start, this.io);
        this.setState(p.block, COPIED);
      } finally {
        unlock();
      }
    }
  }

  private async write(buf: Uint8Array, offset: number, o: IoOptions): Promise<void> {
    for (const p of this.pieces(offset, buf.length)) {
      const piece = buf.subarray(p.pos, p.pos + p.n);
      if (p.n === p.blockLen) {
        await this.put(piece, p.start, this.io);
        if (this.state(p.block) !== COPIED) this.setState(p.block, COPIED);
      } else await this.modify(p, piece);
    }
    if (o.fua) await this.flush(o);
  }

  /**
   * Part of a block: written straight into the overlay if the block is there;
   * otherwise, under the block's lock, the rest of the block is read from where it
   * lives (the base, or zeroes), patched, and the whole block written to the overlay.
   * A block leaves the overlay only by trim or zero, so once COPIED no
   * read-modify-write can clobber a direct write.
   */
  private async modify(p: Piece, piece: Uint8Array): Promise<void> {
    if (this.state(p.block) === COPIED) return this.put(piece, p.start + p.inBlock, this.io);
    const unlock = await this.locks.lock([p.block]);
    try {
      const s = this.state(p.block);
      if (s === COPIED) return await this.put(piece, p.start + p.inBlock, this.io);
      const blk = new Uint8Array(p.blockLen);
      if (s === BASE) await this.base.readAt(blk, p.start, this.io);
      blk.set(piece, p.inBlock);
      await this.put(blk, p.start, this.io);
      this.setState(p.block, COPIED);
    } finally {
      unlock();
    }
  }

  /** Durable: the overlay synced, and with a CowFileOverlay its map too. The base was never written. */
  private async flush(o: IoOptions): Promise<void> {
    if (this.file) await this.file.persist();
    else await this.overlay.sync?.(o);
  }

  /** Whole blocks become zero (nothing stored); partial blocks are left as they are (trim is advisory). */
  private async trim(offset: number, length: number, o: IoOptions): Promise<void> {
    for (const p of this.pieces(offset, length)) if (p.n === p.blockLen) await this.drop(p);
    if (o.fua) await this.flush(o);
  }

  private async drop(p: Piece): Promise<void> {
    this.setState(p.block, ZERO);
    await this.overlay.trim?.(p.start, p.blockLen, this.io);
  }

  /** Whole blocks become zero, or zeroes stored with NO_HOLE; partial blocks are read, zeroed and written (never fast). */
  private async zero(offset: number, length: number, o: ZeroOptions): Promise<void> {
    const ps = this.pieces(offset, length);
    if (o.fast && ps.some((p) => p.n !== p.blockLen || (o.noHole && !this.overlay.zero))) {
      throw new NbdErrnoError(Errno.ENOTSUP, 'cow: zeroing part of a block needs a read-modify-write');
    }
    for (const p of ps) {
      if (p.n !== p.blockLen) await this.modify(p, new Uint8Array(p.n));
      else if (!o.noHole) await this.drop(p);
      else {
        if (this.overlay.zero) await this.overlay.zero(p.start, p.blockLen, { ...this.io, noHole: true, fast: false });
        else await this.put(new Uint8Array(p.blockLen), p.start, this.io);
        this.setState(p.block, COPIED);
      }
    }
    if (o.fua) await this.flush(o);
  }

  private async cache(offset: number, length: number, o: IoOptions): Promise<void> {
    if (!this.opts.onCache) return this.base.cache!(offset, length, o);
    // cow-on-cache: whole blocks still the base's are read and copied.
    const first = Math.floor(offset / this.blockSize) * this.blockSize;
    const end = Math.min(this.size, Math.ceil((offset + length) / this.blockSize) * this.blockSize);
    for (const p of this.pieces(first, end - first)) {
      if (this.state(p.block) !== BASE) continue;
      const blk = new Uint8Array(p.blockLen);
      await this.base.readAt(blk, p.start, o);
      await this.copyWhole([p], blk, p.pos);
    }
  }

  /** Copied blocks are data, zero blocks holes; runs still the base's ask the base (what it leaves out is data). */
  private async extents(offset: number, length: number, o: ExtentsOptions): Promise<DeviceExtent[]> {
    const list = new ExtentList(offset, length, { reqOne: o.reqOne });
    const bs = this.blockSize;
    const end = offset + length;
    while (list.wanted) {
      const from = list.next;
      const s = this.state(Math.floor(from / bs));
      let to = Math.min(end, (Math.floor(from / bs) + 1) * bs);
      while (to < end && this.state(to / bs) === s) to = Math.min(end, to + bs);
      if (s !== BASE || this.base.extents === undefined) list.push(to - from, s === ZERO ? ZERO_HOLE : 0);
      else {
        const got = addExtents(list, from, await this.base.extents(from, to - from, o), to);
        list.add(got, to - got, 0);
      }
    }
    return list.extents;
  }
}

/** A cow filter rebuilt in a worker thread from its share() options. */
export async function cowFromRecipe(
  base: Device,
  o: Record<string, unknown>,
  openRecipe: (r: unknown) => MaybePromise<unknown>,
): Promise<Device> {
  const overlay = (await openRecipe(o.overlay)) as Device | CowFileOverlay;
  const shared = {
    states: overlay instanceof CowFileOverlay ? undefined : (o.states as SharedArrayBuffer),
    locks: o.locks as SharedArrayBuffer,
  };
  return cow(base, { blockSize: o.blockSize as number, onRead: o.onRead as boolean, onCache: o.onCache as boolean, overlay, shared });
}
