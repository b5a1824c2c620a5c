// The one page store behind the memory devices: a device's bytes as fixed-size
// pages in slabs, a lookup from page to slot (its place in a slab), and one walker
// that reads, lends, writes and zeroes byte ranges over it. The devices differ in
// policy only: where a new page comes from and what becomes of a dropped one
// (MemoryDevice reuses slab slots behind a quarantine for lent memory; the sparse
// device of @nbd/devices gives pages to the garbage collector), or how allocation is
// recorded (SharedMemoryDevice: a bitmap that worker threads change with atomics).
import { ZERO_HOLE, zeroChunk } from '@nbd/protocol';
import type { Device, DeviceExtent, Loan } from './device.js';
import { eachUnit, unitExtents } from './extents.js';

const noRelease = (): void => {};

/** Storage made of `pageSize`-byte pages: slot `s` is page `s % perSlab` of slab `floor(s / perSlab)`. */
export abstract class PageStore {
  /** Bytes of the device. */
  readonly size: number;
  /** Bytes per page. */
  readonly pageSize: number;
  /** Pages per slab. */
  protected readonly perSlab: number;
  protected readonly slabs: Uint8Array[];

  constructor(size: number, pageSize: number, perSlab: number, slabs: Uint8Array[] = []) {
    this.size = size;
    this.pageSize = pageSize;
    this.perSlab = perSlab;
    this.slabs = slabs;
  }

  /** The slot holding `page`, or -1: a hole, reading as zeroes. */
  abstract find(page: number): number;
  /** The slot holding `page`, a zeroed one taken for a hole (as a write needs). */
  protected abstract allocate(page: number): number;
  /** Makes `page`, all of it zeroed or trimmed, a hole. */
  protected abstract drop(page: number): void;
  /** Bytes in pages that hold data. */
  abstract get allocated(): number;

  /** Whether `page` holds data (what `extents` reports). */
  has(page: number): boolean {
    return this.find(page) >= 0;
  }

  /** Makes `page` hold data for a zero that keeps it allocated; true if it did already (so its bytes need zeroing). */
  protected claim(page: number): boolean {
    if (this.has(page)) return true;
    this.allocate(page);
    return false;
  }

  /** After part of `page` was zeroed by a trim or zero that may make holes (the rest of it holds what it held). */
  protected zeroedPart(_page: number): void {}

  /** After a write of `length` (> 0) bytes at `offset`. */
  protected written(_offset: number, _length: number): void {}

  /** What a loan's `release` does: nothing, unless dropped pages are reused. */
  protected loan(): () => void {
    return noRelease;
  }

  /** `dst.set(src, at)`; a store of shared memory copies another way. */
  protected copy(dst: Uint8Array, at: number, src: Uint8Array): void {
    dst.set(src, at);
  }

  readAt(buf: Uint8Array, offset: number): void {
    this.runs(offset, buf.length, false, (slab, at, n, pos) => {
      if (slab === undefined) buf.fill(0, pos, pos + n);
      else this.copy(buf, pos, slab.subarray(at, at + n));
    });
  }

  /** The store's own memory (zeroes for holes), a view per run of consecutive slots. */
  lend(offset: number, length: number): Loan {
    const views: Uint8Array[] = [];
    this.runs(offset, length, false, (slab, at, n) => {
      if (slab !== undefined) views.push(slab.subarray(at, at + n));
      else {
        const zero = zeroChunk();
        for (let done = 0; done < n; done += zero.length) views.push(zero.subarray(0, Math.min(zero.length, n - done)));
      }
    });
    return { views, release: this.loan() };
  }

  writeAt(buf: Uint8Array, offset: number): void {
    if (buf.length === 0) return;
    this.runs(offset, buf.length, true, (slab, at, n, pos) => this.copy(slab!, at, n === buf.length ? buf : buf.subarray(pos, pos + n)));
    this.written(offset, buf.length);
  }

  /**
   * Zeroes a range. Unless `keep` (NO_HOLE), whole pages become holes (the device's
   * short last page counts as whole); pages that are holes are left alone, not even touched.
   */
  zero(offset: number, length: number, keep: boolean): void {
    eachUnit(offset, length, this.pageSize, (page, inPage, n, pos) => {
      if (keep) {
        if (this.claim(page)) this.fill(page, inPage, n);
      } else if (this.has(page)) {
        if (inPage === 0 && (n === this.pageSize || offset + pos + n === this.size)) this.drop(page);
        else {
          this.fill(page, inPage, n);
          this.zeroedPart(page);
        }
      }
    });
  }

  /** Zeroes `n` bytes at `inPage` of `page`, which holds data. */
  protected fill(page: number, inPage: number, n: number): void {
    const slot = this.find(page);
    const at = (slot % this.perSlab) * this.pageSize + inPage;
    this.slabs[Math.floor(slot / this.perSlab)]!.fill(0, at, at + n);
  }

  /**
   * The walker: calls `f(slab, at, n, pos)` for each run of the `length` bytes at
   * `offset`, in order: `n` bytes at `at` of `slab` (pages in consecutive slots of one
   * slab, so one copy or view serves them all), or `slab` undefined for holes. Pages
   * are allocated first when `allocate`. A run is handed over as a whole: one callback
   * per run, not per page.
   */
  private runs(
    offset: number,
    length: number,
    allocate: boolean,
    f: (slab: Uint8Array | undefined, at: number, n: number, pos: number) => void,
  ): void {
    if (length === 0) return;
    const size = this.pageSize;
    let page = Math.floor(offset / size);
    let inPage = offset - page * size;
    let slot = allocate ? this.allocate(page) : this.find(page);
    for (let pos = 0; pos < length; ) {
      const first = slot;
      let n = Math.min(size - inPage, length - pos);
      for (page++; pos + n < length; page++) {
        const next = allocate ? this.allocate(page) : this.find(page);
        const joins = first < 0 ? next < 0 : next === slot + 1 && next % this.perSlab !== 0;
        slot = next;
        if (!joins) break;
        n += Math.min(size, length - pos - n);
      }
      if (first < 0) f(undefined, 0, n, pos);
      else f(this.slabs[Math.floor(first / this.perSlab)]!, (first % this.perSlab) * size + inPage, n, pos);
      pos += n;
      inPage = 0;
    }
  }
}

/** A {@link PageStore} whose page → slot lookup is a Map: pages are taken on first write and dropped, with their slot, by trim and zero. */
export abstract class PageTable extends PageStore {
  private readonly pages = new Map<number, number>();

  /** A slot for a new page, its bytes zero. */
  protected abstract takeSlot(): number;
  /** What becomes of the slot of a dropped page. */
  protected abstract dropSlot(slot: number): void;

  find(page: number): number {
    return this.pages.get(page) ?? -1;
  }

  override has(page: number): boolean {
    return this.pages.has(page);
  }

  get allocated(): number {
    return this.pages.size * this.pageSize;
  }

  protected allocate(page: number): number {
    let slot = this.pages.get(page);
    if (slot === undefined) {
      slot = this.takeSlot();
      this.pages.set(page, slot);
    }
    return slot;
  }

  protected drop(page: number): void {
    const slot = this.pages.get(page);
    if (slot === undefined) return;
    this.pages.delete(page);
    this.dropSlot(slot);
  }
}

/**
 * A {@link Device} over a {@link PageStore}: reads, zero-copy READ (`lend`), writes,
 * trim and zero (never slow), allocation map, native FUA, multi-conn. Memory needs no
 * flush or prefetch. MemoryDevice, SharedMemoryDevice and the sparse device of
 * @nbd/devices are this with their own store.
 */
export class PageDevice implements Device {
  readonly size: number;
  readonly multiConn = true;
  // Native FUA: memory is as durable as it gets, so FUA needs no extra sync call.
  readonly fua = true;
  protected readonly pages: PageStore;

  constructor(pages: PageStore) {
    this.pages = pages;
    this.size = pages.size;
  }

  /** Bytes of memory held by pages with data. */
  get allocated(): number {
    return this.pages.allocated;
  }

  readAt(buf: Uint8Array, offset: number): void {
    this.pages.readAt(buf, offset);
  }

  lend(offset: number, length: number): Loan {
    return this.pages.lend(offset, length);
  }

  writeAt(buf: Uint8Array, offset: number): void {
    this.pages.writeAt(buf, offset);
  }

  sync(): void {}

  cache(): void {}

  trim(offset: number, length: number): void {
    this.pages.zero(offset, length, false);
  }

  /** Whole pages become holes unless `noHole` (then they stay or become allocated); partial pages are zero-filled. Always fast. */
  zero(offset: number, length: number, opts?: { noHole?: boolean }): void {
    this.pages.zero(offset, length, opts?.noHole === true);
  }

  extents(offset: number, length: number, opts: { reqOne: boolean }): DeviceExtent[] {
    return unitExtents(offset, length, this.pages.pageSize, (page) => (this.pages.has(page) ? 0 : ZERO_HOLE), opts);
  }
}
