import { describe, expect, it } from 'vitest';
import { MEMORY_PAGE_SIZE as P, MemoryDevice } from './memory-device.js';

describe('MemoryDevice', () => {
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
});
