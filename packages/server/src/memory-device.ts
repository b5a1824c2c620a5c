// A sparse in-memory device: fixed-size pages allocated on first write, dropped
// by trim/zero (their memory is reused, not returned), reported as holes by
// `extents`, lent to the server for zero-copy READ replies. Synchronous, so the
// server replies in the same tick (the fast path the benchmark measures).
import { NbdInvalidArgumentError, ZERO_HOLE } from '@nbd/protocol';
import type { Device, DeviceExtent, Loan } from './device.js';
import { unitExtents } from './extents.js';

/** Page size: as nbdkit's sparse array, small enough that sparse images stay sparse. */
export const MEMORY_PAGE_SIZE = 32 * 1024;
// `x & MASK` is x mod page size for any safe integer: ToInt32 drops multiples of 2^32.
const MASK = MEMORY_PAGE_SIZE - 1;

/** Pages per slab: pages live in 4 MiB slabs, so the GC tracks a few large buffers, not one per page. */
const SLAB_PAGES = 128;
/** What a hole lends. */
const ZERO_PAGE = new Uint8Array(MEMORY_PAGE_SIZE);

/**
 * Extents of a device made of MEMORY_PAGE_SIZE pages, each allocated (data) or
 * not (a hole reading as zeroes): neighbours merged, only the first with reqOne.
 */
export function pageExtents(offset: number, length: number, reqOne: boolean, allocated: (page: number) => boolean): DeviceExtent[] {
  return unitExtents(offset, length, MEMORY_PAGE_SIZE, (page) => (allocated(page) ? 0 : ZERO_HOLE), { reqOne });
}

/**
 * A sparse in-memory {@link Device} of a fixed size in bytes: 32 KiB pages allocated on first write and
 * dropped by trim/zero, holes reported by `extents`, zero-copy READ by `lend`, native FUA, multi-conn.
 */
export class MemoryDevice implements Device {
  readonly size: number;
  readonly multiConn = true;
  // Native FUA: memory is as durable as it gets, so FUA needs no extra sync call.
  readonly fua = true;
  /** Page index → slot (slab number × SLAB_PAGES + page within the slab). */
  private readonly pages = new Map<number, number>();
  private readonly slabs: Uint8Array[] = [];
  /** Slots of dropped pages, reused before new slabs are allocated. */
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  /**
   * Dropped pages' slots wait here while memory lent before the drop may still
   * be unsent, so a reply never carries another offset's data. `gen` counts
   * drops; a slot dropped in generation g is free once no loan of generation ≤ g is out.
   */
  private quarantine: { slot: number; gen: number }[] = [];
  private quarantineHead = 0;
  private gen = 0;
  /** Generation → loans still out. */
  private readonly loans = new Map<number, number>();

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`MemoryDevice: bad size ${size}`);
    this.size = size;
  }

  /** Bytes of memory held by allocated pages. */
  get allocated(): number {
    return this.pages.size * MEMORY_PAGE_SIZE;
  }

  readAt(buf: Uint8Array, offset: number): void {
    let pos = 0;
    const end = buf.length;
    while (pos < end) {
      const at = offset + pos;
      const inPage = at & MASK;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - pos);
      const slot = this.pages.get(Math.floor(at / MEMORY_PAGE_SIZE));
      if (slot === undefined) buf.fill(0, pos, pos + n);
      else {
        const o = (slot % SLAB_PAGES) * MEMORY_PAGE_SIZE + inPage;
        buf.set(this.slabs[Math.floor(slot / SLAB_PAGES)]!.subarray(o, o + n), pos);
      }
      pos += n;
    }
  }

  /** The pages themselves (a shared zero page for holes), adjacent ones merged: the server sends them without a copy. */
  lend(offset: number, length: number): Loan {
    const views: Uint8Array[] = [];
    let last: Uint8Array | undefined;
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const inPage = at & MASK;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - at);
      const slot = this.pages.get(Math.floor(at / MEMORY_PAGE_SIZE));
      let v: Uint8Array;
      if (slot === undefined) v = ZERO_PAGE.subarray(inPage, inPage + n);
      else {
        const o = (slot % SLAB_PAGES) * MEMORY_PAGE_SIZE + inPage;
        const slab = this.slabs[Math.floor(slot / SLAB_PAGES)]!;
        if (last !== undefined && last.buffer === slab.buffer && last.byteOffset + last.length === slab.byteOffset + o) {
          // Consecutive slots (a sequentially written range): one view.
          v = slab.subarray(last.byteOffset - slab.byteOffset, o + n);
          views[views.length - 1] = v;
          last = v;
          at += n;
          continue;
        }
        v = slab.subarray(o, o + n);
      }
      views.push(v);
      last = v;
      at += n;
    }
    const gen = this.gen;
    this.loans.set(gen, (this.loans.get(gen) ?? 0) + 1);
    let out = true;
    return {
      views,
      release: () => {
        if (!out) return;
        out = false;
        const left = this.loans.get(gen)! - 1;
        if (left === 0) this.loans.delete(gen);
        else this.loans.set(gen, left);
      },
    };
  }

  writeAt(buf: Uint8Array, offset: number): void {
    let pos = 0;
    const end = buf.length;
    while (pos < end) {
      const at = offset + pos;
      const inPage = at & MASK;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - pos);
      const index = Math.floor(at / MEMORY_PAGE_SIZE);
      let slot = this.pages.get(index);
      if (slot === undefined) {
        slot = this.allocSlot();
        this.pages.set(index, slot);
      }
      const o = (slot % SLAB_PAGES) * MEMORY_PAGE_SIZE + inPage;
      this.slabs[Math.floor(slot / SLAB_PAGES)]!.set(n === end && pos === 0 ? buf : buf.subarray(pos, pos + n), o);
      pos += n;
    }
  }

  sync(): void {}

  cache(): void {}

  trim(offset: number, length: number): void {
    this.clear(offset, length);
  }

  /** Whole pages are dropped (they read back as zeroes) unless `noHole`; partial pages are zero-filled. Always fast. */
  zero(offset: number, length: number, opts?: { noHole?: boolean }): void {
    if (opts?.noHole) this.fillZero(offset, length);
    else this.clear(offset, length);
  }

  extents(offset: number, length: number, opts: { reqOne: boolean }): DeviceExtent[] {
    return pageExtents(offset, length, opts.reqOne, (page) => this.pages.has(page));
  }

  private allocSlot(): number {
    if (this.freeSlots.length === 0 && this.quarantineHead < this.quarantine.length) this.unquarantine();
    const reused = this.freeSlots.pop();
    if (reused !== undefined) {
      this.zeroSlot(reused, 0, MEMORY_PAGE_SIZE);
      return reused;
    }
    const slot = this.nextSlot++;
    if (Math.floor(slot / SLAB_PAGES) >= this.slabs.length) this.slabs.push(new Uint8Array(SLAB_PAGES * MEMORY_PAGE_SIZE));
    return slot;
  }

  /** Frees quarantined slots that no outstanding loan can still show. */
  private unquarantine(): void {
    let oldest = Infinity;
    for (const g of this.loans.keys()) oldest = Math.min(oldest, g);
    const q = this.quarantine;
    while (this.quarantineHead < q.length && q[this.quarantineHead]!.gen < oldest) this.freeSlots.push(q[this.quarantineHead++]!.slot);
    if (this.quarantineHead === q.length) {
      this.quarantine = [];
      this.quarantineHead = 0;
    }
  }

  private dropSlot(slot: number): void {
    if (this.loans.size === 0) this.freeSlots.push(slot);
    else this.quarantine.push({ slot, gen: this.gen });
  }

  private zeroSlot(slot: number, from: number, to: number): void {
    const o = (slot % SLAB_PAGES) * MEMORY_PAGE_SIZE;
    this.slabs[Math.floor(slot / SLAB_PAGES)]!.fill(0, o + from, o + to);
  }

  /** Zeroes a range keeping it allocated (NBD_CMD_FLAG_NO_HOLE). */
  private fillZero(offset: number, length: number): void {
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const inPage = at & MASK;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - at);
      const index = Math.floor(at / MEMORY_PAGE_SIZE);
      const slot = this.pages.get(index);
      if (slot === undefined) this.pages.set(index, this.allocSlot());
      else this.zeroSlot(slot, inPage, inPage + n);
      at += n;
    }
  }

  private clear(offset: number, length: number): void {
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const inPage = at & MASK;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - at);
      const index = Math.floor(at / MEMORY_PAGE_SIZE);
      const slot = this.pages.get(index);
      if (slot !== undefined) {
        if (n === MEMORY_PAGE_SIZE) {
          this.pages.delete(index);
          this.dropSlot(slot);
        } else this.zeroSlot(slot, inPage, inPage + n);
      }
      at += n;
    }
    // Loans made from now on cannot show the slots dropped so far.
    if (this.loans.size > 0) this.gen++;
  }
}
