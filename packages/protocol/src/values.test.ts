import { describe, expect, test } from 'vitest';
import { Errno } from './constants.js';
import { isKnownErrno, NbdInvalidArgumentError, normalizeErrno } from './errors.js';
import { after, isAllZero, isPowerOfTwo, isPromise, writeZeroes, zeroChunk } from './values.js';

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

  test('writeZeroes: chunks of the zero chunk (or the one given) covering the range, each after the last settled', async () => {
    const calls: [number, number][] = [];
    let inFlight = 0;
    const write = async (z: Uint8Array, at: number) => {
      expect(inFlight++).toBe(0);
      expect(isAllZero(z)).toBe(true);
      calls.push([at, z.length]);
      await Promise.resolve();
      inFlight--;
    };
    const M = zeroChunk().length;
    expect(M).toBe(1024 * 1024);
    await writeZeroes(10, 2 * M + 5, write);
    expect(calls).toEqual([
      [10, M],
      [10 + M, M],
      [10 + 2 * M, 5],
    ]);
    calls.length = 0;
    await writeZeroes(0, 0, write);
    await writeZeroes(7, 10, (z, at) => void calls.push([at, z.length]), new Uint8Array(4));
    expect(calls).toEqual([
      [7, 4],
      [11, 4],
      [15, 2],
    ]);
    await expect(writeZeroes(0, 1, write, new Uint8Array(0))).rejects.toThrow(NbdInvalidArgumentError);
  });

  test('isKnownErrno: the errnos of the protocol, and nothing else (0 included)', () => {
    expect(Object.values(Errno).every(isKnownErrno)).toBe(true);
    expect([0, 2, 13, 61, -5].some(isKnownErrno)).toBe(false);
    expect(normalizeErrno(Errno.ENOSPC)).toBe(Errno.ENOSPC);
    expect(normalizeErrno(61)).toBe(Errno.EINVAL);
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
