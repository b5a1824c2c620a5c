import { NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { MemoryDevice, MEMORY_PAGE_SIZE as P } from './memory-device.js';

describe('MemoryDevice', () => {
  it('refuses a size that is not a non-negative safe integer with NbdInvalidArgumentError', () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) expect(() => new MemoryDevice(bad), String(bad)).toThrow(NbdInvalidArgumentError);
  });

  it('reads zeroes before any write and allocates nothing', () => {
    const d = new MemoryDevice(4 * P);
    const b = new Uint8Array(3 * P).fill(1);
    d.readAt(b, 100);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(d.allocated).toBe(0);
  });

  it('writes and reads across page boundaries, at offsets beyond 2^32', () => {
    const big = 2 ** 33;
    const d = new MemoryDevice(big + 4 * P);
    const data = Uint8Array.from({ length: 2 * P + 10 }, (_, i) => (i * 7) % 256);
    d.writeAt(data, big + P - 5);
    const back = new Uint8Array(data.length);
    d.readAt(back, big + P - 5);
    expect(back).toEqual(data);
    expect(d.allocated).toBe(4 * P);
  });

  it('extents report holes and data, merged, and stop after the first with reqOne', () => {
    const d = new MemoryDevice(8 * P);
    d.writeAt(new Uint8Array(10).fill(1), 2 * P + 3);
    d.writeAt(new Uint8Array(10).fill(1), 3 * P);
    expect(d.extents(0, 8 * P, { reqOne: false })).toEqual([
      { length: 2 * P, flags: 3 },
      { length: 2 * P, flags: 0 },
      { length: 4 * P, flags: 3 },
    ]);
    expect(d.extents(100, P, { reqOne: true })).toEqual([{ length: P, flags: 3 }]);
    expect(d.extents(2 * P + 1, 5 * P, { reqOne: true })).toEqual([{ length: 2 * P - 1, flags: 0 }]);
  });

  it('trim and zero drop whole pages and zero partial ones; noHole keeps pages', () => {
    const d = new MemoryDevice(4 * P);
    d.writeAt(new Uint8Array(4 * P).fill(0xee), 0);
    d.trim(10, 2 * P);
    expect(d.allocated).toBe(3 * P);
    const b = new Uint8Array(2 * P + 20);
    d.readAt(b, 0);
    expect(b.subarray(0, 10).every((x) => x === 0xee)).toBe(true);
    expect(b.subarray(10, 2 * P + 10).every((x) => x === 0)).toBe(true);
    expect(b.subarray(2 * P + 10).every((x) => x === 0xee)).toBe(true);
    d.zero(3 * P, P, { noHole: true });
    expect(d.allocated).toBe(3 * P);
    d.zero(3 * P, P);
    expect(d.allocated).toBe(2 * P);
  });

  it('lends the bytes readAt would give, holes as zeroes, consecutive pages as one view', () => {
    const d = new MemoryDevice(16 * P);
    const data = Uint8Array.from({ length: 4 * P }, (_, i) => (i * 13) % 251);
    d.writeAt(data, 2 * P);
    for (const [off, len] of [
      [2 * P, 4 * P],
      [P + 7, 3 * P],
      [5 * P - 3, 4 * P],
      [0, 16 * P],
    ] as const) {
      const want = new Uint8Array(len);
      d.readAt(want, off);
      const loan = d.lend(off, len);
      expect(Buffer.concat(loan.views)).toEqual(Buffer.from(want));
      loan.release();
    }
    // The written range sits in consecutive slots of one slab: a single view.
    expect(d.lend(2 * P, 4 * P).views.length).toBe(1);
  });

  it('does not reuse a dropped page for other data while a loan may still show it', () => {
    const d = new MemoryDevice(8 * P);
    d.writeAt(new Uint8Array(P).fill(0xaa), 0);
    const loan = d.lend(0, P);
    d.trim(0, P); // page 0 dropped while lent
    d.writeAt(new Uint8Array(P).fill(0xbb), 4 * P); // must not land in the lent memory
    expect(loan.views[0]!.every((x) => x === 0xaa)).toBe(true);
    loan.release();
    d.trim(4 * P, P);
    d.writeAt(new Uint8Array(P).fill(0xcc), 5 * P);
    // After the release the quarantined slot is reused: no more memory than two pages' worth of slots.
    d.writeAt(new Uint8Array(P).fill(0xdd), 6 * P);
    expect(loan.views[0]!.every((x) => x === 0xcc || x === 0xdd)).toBe(true);
    const back = new Uint8Array(P);
    d.readAt(back, 6 * P);
    expect(back.every((x) => x === 0xdd)).toBe(true);
  });
});
