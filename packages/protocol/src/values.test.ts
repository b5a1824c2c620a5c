import { describe, expect, test } from 'vitest';
import { after, isAllZero, isPowerOfTwo, isPromise } from './values.js';

describe('values', () => {
  test('isPowerOfTwo', () => {
    expect([1, 2, 4, 512, 2 ** 40, 2 ** 52].every(isPowerOfTwo)).toBe(true);
    expect([0, -2, 3, 6, 0.5, 2 ** 40 + 1, Number.NaN, Number.POSITIVE_INFINITY].some(isPowerOfTwo)).toBe(false);
  });

  test('isAllZero at every length and alignment, one non-zero byte anywhere', () => {
    const big = new Uint8Array(200 * 1024 + 7);
    for (const [start, len] of [
      [0, 0],
      [0, 1],
      [1, 7],
      [3, 130 * 1024],
      [0, big.length],
    ] as const) {
      const view = big.subarray(start, start + len);
      expect(isAllZero(view)).toBe(true);
      for (const at of [0, len >> 1, len - 1]) {
        if (len === 0) continue;
        view[at] = 0x80;
        expect(isAllZero(view)).toBe(false);
        view[at] = 0;
      }
    }
  });

  test('after: synchronous for values, chained for promises, onError for rejections', async () => {
    expect(after(2, (v) => v * 3)).toBe(6);
    const p = after(Promise.resolve(2), (v) => v * 3);
    expect(isPromise(p)).toBe(true);
    expect(await p).toBe(6);
    expect(
      await after(
        Promise.reject(new Error('x')),
        () => 0,
        () => -1,
      ),
    ).toBe(-1);
    expect(isPromise(undefined)).toBe(false);
  });
});
