import { describe, expect, it } from 'vitest';
import { MemoryDevice, MEMORY_PAGE_SIZE as P } from './memory-device.js';
import { PageDevice, PageTable } from './page-store.js';

/** A page table of 1 KiB pages, 4 to a slab, slots taken in order and never reused; counts its lookups. */
class SmallPages extends PageTable {
  lookups = 0;
  private next = 0;
  constructor(size: number) {
    super(size, 1024, 4);
  }
  override find(page: number): number {
    this.lookups++;
    return super.find(page);
  }
  protected takeSlot(): number {
    const slot = this.next++;
    if (Math.floor(slot / 4) >= this.slabs.length) this.slabs.push(new Uint8Array(4 * 1024));
    return slot;
  }
  protected dropSlot(): void {}
}

const K = 1024;
const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) % 251);

describe('PageStore', () => {
  it('walks runs, not pages: consecutive slots of one slab are one view; a slab boundary or a hole starts another', () => {
    const pages = new SmallPages(64 * K);
    const d = new PageDevice(pages);
    d.writeAt(pattern(6 * K, 1), 0); // slots 0..5: pages 0-3 in slab 0, pages 4-5 in slab 1
    d.writeAt(pattern(K, 2), 8 * K); // slot 6, page 8
    const lens = (off: number, len: number) => d.lend(off, len).views.map((v) => v.length);
    expect(lens(0, 6 * K)).toEqual([4 * K, 2 * K]);
    expect(lens(100, 3 * K)).toEqual([3 * K]);
    // Pages 5 and 8 sit in consecutive slots (5, 6) but not at consecutive offsets: holes 6-7 come between.
    expect(lens(5 * K, 4 * K)).toEqual([K, 2 * K, K]);
    const want = new Uint8Array(9 * K);
    want.set(pattern(6 * K, 1), 0);
    want.set(pattern(K, 2), 8 * K);
    const got = new Uint8Array(9 * K).fill(0x5a);
    pages.lookups = 0;
    d.readAt(got, 0);
    expect(got).toEqual(want);
    expect(pages.lookups).toBe(9); // one lookup per page, none twice
    expect(Buffer.concat(d.lend(0, 9 * K).views)).toEqual(Buffer.from(want));
  });

  it('lends holes as views of one shared chunk of zeroes, at most 1 MiB each', () => {
    const d = new MemoryDevice(4 * 1024 * K);
    const loan = d.lend(K, 3 * 1024 * K);
    expect(loan.views.map((v) => v.length)).toEqual([1024 * K, 1024 * K, 1024 * K]);
    expect(new Set(loan.views.map((v) => v.buffer)).size).toBe(1);
    expect(loan.views.every((v) => v.every((x) => x === 0))).toBe(true);
    loan.release();
  });

  it('an empty write allocates nothing', () => {
    const d = new MemoryDevice(4 * P);
    d.writeAt(new Uint8Array(0), P);
    expect(d.allocated).toBe(0);
  });

  it("trim and zero reaching the device's end drop its short last page, as a whole one", () => {
    const d = new MemoryDevice(2 * P + 100);
    d.writeAt(new Uint8Array(2 * P + 100).fill(0xee), 0);
    expect(d.allocated).toBe(3 * P);
    d.trim(2 * P, 100);
    expect(d.allocated).toBe(2 * P);
    expect(d.extents(P, P + 100, { reqOne: false })).toEqual([
      { length: P, flags: 0 },
      { length: 100, flags: 3 },
    ]);
    d.writeAt(new Uint8Array(10).fill(1), 2 * P + 90);
    d.zero(2 * P + 50, 50);
    expect(d.allocated).toBe(3 * P); // not from the page's start: zero-filled, kept
    d.zero(2 * P, 100, { noHole: true });
    expect(d.allocated).toBe(3 * P);
    d.zero(2 * P, 100);
    expect(d.allocated).toBe(2 * P);
    const b = new Uint8Array(100).fill(1);
    d.readAt(b, 2 * P);
    expect(b.every((x) => x === 0)).toBe(true);
  });
});
