// ReadCoverage against a byte map: whatever the order of the chunks, an overlap is
// refused (or merged), and the first gap and the bytes covered are exact.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ReadCoverage } from './read-coverage.js';

const LENGTH = 64;
const ranges = fc.array(fc.tuple(fc.nat({ max: LENGTH - 1 }), fc.integer({ min: 1, max: 16 })), { maxLength: 24 });

describe('ReadCoverage', () => {
  test('refuses exactly the ranges that overlap earlier ones; covered and firstGap match a byte map', () => {
    fc.assert(
      fc.property(ranges, (rs) => {
        const cov = new ReadCoverage();
        const seen = new Array<boolean>(LENGTH + 16).fill(false);
        for (const [start, n] of rs) {
          const overlaps = seen.slice(start, start + n).some(Boolean);
          expect(cov.add(start, start + n)).toBe(!overlaps);
          if (!overlaps) seen.fill(true, start, start + n);
        }
        expect(cov.covered).toBe(seen.filter(Boolean).length);
        const gap = seen.slice(0, LENGTH).indexOf(false);
        expect(cov.firstGap(LENGTH)).toBe(cov.covered >= LENGTH ? undefined : gap);
      }),
    );
  });

  test('with union, overlaps merge: covered is the size of the union', () => {
    fc.assert(
      fc.property(ranges, (rs) => {
        const cov = new ReadCoverage();
        const seen = new Array<boolean>(LENGTH + 16).fill(false);
        for (const [start, n] of rs) {
          expect(cov.add(start, start + n, true)).toBe(true);
          seen.fill(true, start, start + n);
        }
        expect(cov.covered).toBe(seen.filter(Boolean).length);
      }),
    );
  });

  test('chunks in order stay one interval', () => {
    const cov = new ReadCoverage();
    for (let i = 0; i < 1000; i++) expect(cov.add(i * 10, i * 10 + 10)).toBe(true);
    expect(cov.firstGap(10_000)).toBeUndefined();
    expect((cov as unknown as { starts: number[] }).starts).toEqual([0]);
  });
});
