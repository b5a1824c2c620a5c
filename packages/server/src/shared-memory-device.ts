// A sparse in-memory device whose bytes live in SharedArrayBuffers, so worker
// threads can serve the same device: `share()` gives a recipe, and a worker's
// `openDevice(recipe.args)` builds a handle on the very same memory.
//
// The whole size is allocated up front as 64 MiB slabs; the OS backs a slab's
// pages only once they are touched, so untouched space costs address space, not
// RSS. An allocation bitmap (one bit per 32 KiB page, an Int32Array over its own
// SharedArrayBuffer) answers `extents`.
//
// Memory is never given back to the OS (Node has no madvise): trim and zero
// fill pages with zeroes in place and clear their bit, so a page once written
// stays resident. Invariant: a page whose bit is clear holds only zeroes, which
// lets reads ignore the bitmap and trim skip pages never written.
//
// No locks: bitmap bits change with Atomics (set after a write's copy, cleared
// before a trim's fill, so a race never leaves data under a clear bit), and
// overlapping concurrent requests may race on the data, as NBD allows.
import { isSharedArrayBuffer } from 'node:util/types';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { DeviceRecipe } from './device.js';
import { MEMORY_PAGE_SIZE as PAGE } from './memory-device.js';
import { PageDevice, PageStore } from './page-store.js';

/** Slab size: a power of 2 and a multiple of the page size, so no page spans two slabs. */
export const SHARED_SLAB_SIZE = 64 * 1024 * 1024;

/** What `share()` hands to worker threads (structuredClone shares the buffers). */
export interface SharedMemoryDeviceArgs {
  size: number;
  /** ceil(size / 64 MiB) slabs, each 64 MiB but the last (size mod 64 MiB, if not 0). */
  slabs: SharedArrayBuffer[];
  /** Allocation bitmap: 4 × ceil(pages / 32) bytes, bit (p & 31) of int32 word p / 32 = page p. */
  map: SharedArrayBuffer;
}

/**
 * The pages of a SharedMemoryDevice: page p is always slot p (the slabs hold the
 * whole size), so reads and lends ignore the bitmap; its bits say which pages hold data.
 */
class SharedPages extends PageStore {
  private readonly map: Int32Array;

  constructor(args: SharedMemoryDeviceArgs) {
    super(
      args.size,
      PAGE,
      SHARED_SLAB_SIZE / PAGE,
      args.slabs.map((b) => new Uint8Array(b)),
    );
    this.map = new Int32Array(args.map);
  }

  /** Bytes in pages marked allocated (written, or zeroed with noHole) and not trimmed since. */
  get allocated(): number {
    let pages = 0;
    for (let w = 0; w < this.map.length; w++) {
      // Popcount of a 32-bit word.
      let v = Atomics.load(this.map, w);
      v -= (v >>> 1) & 0x55555555;
      v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
      pages += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
    }
    return pages * PAGE;
  }

  // Holes are zero bytes in the slabs (the invariant), so every page has its place.
  find(page: number): number {
    return page;
  }

  protected allocate(page: number): number {
    return page;
  }

  override has(page: number): boolean {
    return (Atomics.load(this.map, Math.floor(page / 32)) & (1 << (page & 31))) !== 0;
  }

  // After the copy: a page's bit is never set before its data is there.
  protected override written(offset: number, length: number): void {
    this.markPages(Math.floor(offset / PAGE), Math.floor((offset + length - 1) / PAGE));
  }

  // A whole page loses its bit before the fill: a write racing in sets it again
  // after its copy, so data never sits under a clear bit.
  protected drop(page: number): void {
    const bit = 1 << (page & 31);
    if ((Atomics.and(this.map, Math.floor(page / 32), ~bit) & bit) !== 0) this.fill(page, 0, PAGE);
  }

  // A hole (already zero) is just marked allocated.
  protected override claim(page: number): boolean {
    const bit = 1 << (page & 31);
    return (Atomics.or(this.map, Math.floor(page / 32), bit) & bit) !== 0;
  }

  /**
   * V8 copies shared memory with a relaxed word loop, byte by byte when the two sides
   * are not equally aligned mod 8 (a WRITE payload sits 28 bytes past its header):
   * 3.4 GiB/s, measured. Buffer's fill with a value exactly as long as the target is
   * one memcpy (25 GiB/s).
   */
  protected override copy(dst: Uint8Array, at: number, src: Uint8Array): void {
    Buffer.from(dst.buffer, dst.byteOffset + at, src.length).fill(src);
  }

  /** Sets the bits of pages first..last (inclusive), a word at a time. */
  private markPages(first: number, last: number): void {
    const firstWord = Math.floor(first / 32);
    const lastWord = Math.floor(last / 32);
    for (let w = firstWord; w <= lastWord; w++) {
      const lo = w === firstWord ? first & 31 : 0;
      const hi = w === lastWord ? last & 31 : 31;
      // hi - lo + 1 ones, shifted to bit lo (-1 >>> 0 is 32 ones).
      const mask = (-1 >>> (31 - hi + lo)) << lo;
      if ((Atomics.load(this.map, w) & mask) !== mask) Atomics.or(this.map, w, mask);
    }
  }
}

/**
 * A sparse in-memory `Device` over SharedArrayBuffers that worker threads serve together (`share()`):
 * MemoryDevice's semantics, its whole size reserved up front, resident once written, never given back.
 */
export class SharedMemoryDevice extends PageDevice {
  private readonly args: SharedMemoryDeviceArgs;

  /** A new zeroed device of `size` bytes, or (given `share().args`) another handle on an existing one. */
  constructor(sizeOrArgs: number | SharedMemoryDeviceArgs) {
    let args: SharedMemoryDeviceArgs;
    if (typeof sizeOrArgs === 'number') {
      const size = sizeOrArgs;
      if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`SharedMemoryDevice: bad size ${size}`);
      const slabs: SharedArrayBuffer[] = [];
      for (let at = 0; at < size; at += SHARED_SLAB_SIZE) slabs.push(new SharedArrayBuffer(Math.min(SHARED_SLAB_SIZE, size - at)));
      args = { size, slabs, map: new SharedArrayBuffer(mapBytes(size)) };
    } else {
      const checked = checkArgs(sizeOrArgs);
      args = { ...checked, slabs: checked.slabs.slice() };
    }
    super(new SharedPages(args));
    this.args = args;
  }

  /** A handle on the device `args` (from `share()`) describes; NbdInvalidArgumentError if they do not describe one. */
  static attach(args: unknown): SharedMemoryDevice {
    // Checked here too: a bare number would otherwise make a new device.
    return new SharedMemoryDevice(checkArgs(args));
  }

  /** How a worker thread opens this same device: import `module`, call its `openDevice(args)`. */
  share(): DeviceRecipe {
    const args: SharedMemoryDeviceArgs = { size: this.size, slabs: this.args.slabs.slice(), map: this.args.map };
    return { module: import.meta.url, args };
  }
}

/** What a worker thread's `import(recipe.module)` calls. */
export function openDevice(args: unknown): SharedMemoryDevice {
  return SharedMemoryDevice.attach(args);
}

function mapBytes(size: number): number {
  return Math.ceil(Math.ceil(size / PAGE) / 32) * 4;
}

/** `args` as SharedMemoryDeviceArgs, or an NbdInvalidArgumentError saying what is wrong. */
function checkArgs(args: unknown): SharedMemoryDeviceArgs {
  const bad = (why: string): never => {
    throw new NbdInvalidArgumentError(`SharedMemoryDevice: bad shared device args: ${why}`);
  };
  if (typeof args !== 'object' || args === null) return bad('not an object');
  const { size, slabs, map } = args as Record<string, unknown>;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return bad(`size ${String(size)}`);
  if (!Array.isArray(slabs) || slabs.length !== Math.ceil(size / SHARED_SLAB_SIZE))
    return bad('slabs is not an array of ceil(size / 64 MiB) buffers');
  for (let i = 0; i < slabs.length; i++) {
    const s: unknown = slabs[i];
    const want = Math.min(SHARED_SLAB_SIZE, size - i * SHARED_SLAB_SIZE);
    if (!isSharedArrayBuffer(s) || s.byteLength !== want) return bad(`slab ${i} is not a SharedArrayBuffer of ${want} bytes`);
  }
  if (!isSharedArrayBuffer(map) || map.byteLength !== mapBytes(size))
    return bad(`map is not a SharedArrayBuffer of ${mapBytes(size)} bytes`);
  return { size, slabs: slabs as SharedArrayBuffer[], map };
}
