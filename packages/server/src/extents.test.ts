import { NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { ExtentList, eachUnit, unitExtents } from './extents.js';

describe('ExtentList', () => {
  test('clips to the range, merges equal neighbours, ignores what is already covered', () => {
    const l = new ExtentList(100, 1000);
    expect(l.add(0, 150, 0)).toBe(true); // starts before the range: clipped to [100, 150)
    expect(l.add(120, 30, 3)).toBe(true); // already covered
    expect(l.add(150, 50, 0)).toBe(true); // merged
    expect(l.add(200, 5000, 3)).toBe(false); // clipped at the end
    expect(l.extents).toEqual([
      { length: 100, flags: 0 },
      { length: 1000 - 100, flags: 3 },
    ]);
    expect(l.add(2000, 10, 0)).toBe(false);
  });

  test('a gap is the caller’s bug', () => {
    const l = new ExtentList(0, 100);
    l.push(10, 0);
    expect(() => l.add(20, 10, 0)).toThrow(NbdInvalidArgumentError);
  });

  test('reqOne keeps the first extent only; maxCount caps the count', () => {
    const one = new ExtentList(0, 100, { reqOne: true });
    one.push(10, 0);
    one.push(10, 0);
    expect(one.push(10, 1)).toBe(false);
    expect(one.extents).toEqual([{ length: 20, flags: 0 }]);
    const two = new ExtentList(0, 100, { maxCount: 2 });
    for (let i = 0; i < 10; i++) two.push(10, i % 2);
    expect(two.extents).toEqual([
      { length: 10, flags: 0 },
      { length: 10, flags: 1 },
    ]);
  });

  test('non-positive or NaN lengths add nothing', () => {
    const l = new ExtentList(0, 10);
    expect(l.push(0, 0)).toBe(true);
    expect(l.push(Number.NaN, 0)).toBe(true);
    expect(l.extents).toEqual([]);
  });
});

test('eachUnit walks unit by unit', () => {
  const seen: number[][] = [];
  eachUnit(1000, 5000, 4096, (...a) => seen.push(a));
  expect(seen).toEqual([
    [0, 1000, 3096, 0],
    [1, 0, 1904, 3096],
  ]);
});

test('unitExtents merges units of equal flags, clipped to the range, stopping early with reqOne', () => {
  const asked: number[] = [];
  const flagsOf = (u: number) => (asked.push(u), u === 2 || u === 3 ? 0 : 3);
  expect(unitExtents(100, 4 * 1000, 1000, flagsOf)).toEqual([
    { length: 1900, flags: 3 },
    { length: 2000, flags: 0 },
    { length: 100, flags: 3 },
  ]);
  asked.length = 0;
  expect(unitExtents(0, 10_000, 1000, flagsOf, { reqOne: true })).toEqual([{ length: 2000, flags: 3 }]);
  expect(asked).toEqual([0, 1, 2]);
});
