import { NbdInvalidArgumentError, ZERO_HOLE } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { SPARSE_PAGE_SIZE as P, SparseMemoryDevice } from './sparse-memory-device.js';

const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) % 251);
const read = (d: SparseMemoryDevice, offset: number, length: number) => {
  const b = new Uint8Array(length).fill(0x5a);
  d.readAt(b, offset);
  return b;
};
const allZero = (b: Uint8Array) => b.every((x) => x === 0);

describe('SparseMemoryDevice', () => {
  it('refuses a bad size or page size with NbdInvalidArgumentError', () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53])
      expect(() => new SparseMemoryDevice(bad), String(bad)).toThrow(NbdInvalidArgumentError);
    for (const pageSize of [0, 2048, 3 * 4096, 2 << 20, 4096.5])
      expect(() => new SparseMemoryDevice(P, { pageSize }), String(pageSize)).toThrow(NbdInvalidArgumentError);
    expect(new SparseMemoryDevice(P, { pageSize: 4096 }).pageSize).toBe(4096);
  });

  it('writes and reads across pages, holes read as zeroes, extents follow the pages', () => {
    const d = new SparseMemoryDevice(8 * P);
    const a = pattern(2 * P + 10, 1);
    d.writeAt(a, P - 5);
    expect(read(d, P - 5, a.length)).toEqual(a);
    expect(allZero(read(d, 0, P - 5))).toBe(true);
    expect(d.allocated).toBe(4 * P);
    expect(d.extents(0, 8 * P, { reqOne: false })).toEqual([
      { length: 4 * P, flags: 0 },
      { length: 4 * P, flags: ZERO_HOLE },
    ]);
    expect(d.extents(4 * P, 4 * P, { reqOne: true })).toEqual([{ length: 4 * P, flags: ZERO_HOLE }]);
  });

  it('lends the bytes readAt gives, one view per page (each page its own buffer)', () => {
    const d = new SparseMemoryDevice(8 * P);
    d.writeAt(pattern(3 * P, 2), 2 * P);
    for (const [off, len] of [
      [2 * P, 3 * P],
      [P + 7, 3 * P],
      [0, 8 * P],
    ] as const) {
      const loan = d.lend(off, len);
      expect(Buffer.concat(loan.views)).toEqual(Buffer.from(read(d, off, len)));
      loan.release();
    }
    expect(d.lend(2 * P, 3 * P).views.length).toBe(3);
  });

  it('trim drops whole pages, and partial pages once nothing but zeroes is left in them', () => {
    const d = new SparseMemoryDevice(4 * P);
    d.writeAt(new Uint8Array(4 * P).fill(0xee), 0);
    d.trim(10, 2 * P);
    expect(d.allocated).toBe(3 * P); // page 1 dropped; pages 0 and 2 keep data
    expect(read(d, 0, 10).every((x) => x === 0xee)).toBe(true);
    expect(allZero(read(d, 10, 2 * P))).toBe(true);
    d.trim(0, 10);
    expect(d.allocated).toBe(2 * P); // page 0 now all zero: dropped
    expect(d.extents(0, 2 * P, { reqOne: false })).toEqual([{ length: 2 * P, flags: ZERO_HOLE }]);
  });

  it('zero with noHole keeps (or makes) pages allocated; without, it drops them', () => {
    const d = new SparseMemoryDevice(4 * P);
    d.writeAt(new Uint8Array(P).fill(1), 0);
    d.zero(0, 3 * P, { noHole: true });
    expect(d.allocated).toBe(3 * P);
    expect(allZero(read(d, 0, 3 * P))).toBe(true);
    d.zero(0, 3 * P);
    expect(d.allocated).toBe(0);
  });

  it('never reuses lent memory for another offset: a loan outlives the trim of its page', () => {
    const d = new SparseMemoryDevice(4 * P);
    d.writeAt(new Uint8Array(P).fill(0xaa), 0);
    const loan = d.lend(0, P);
    d.trim(0, P);
    d.writeAt(new Uint8Array(P).fill(0xbb), 2 * P);
    expect(loan.views[0]!.every((x) => x === 0xaa)).toBe(true);
    loan.release();
  });
});
