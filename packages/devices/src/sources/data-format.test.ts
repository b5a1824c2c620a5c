// The data format against hostile strings: whatever the string, building a DataDevice
// costs work and memory bounded by its size (only what lands inside is built) or is
// refused with NbdInvalidArgumentError under the stated budget (DataDeviceOptions.maxWork).
// Issue 19: '(1 @+4095)*100000000' with size=1M built all 10^8 copies (1 GiB in 1.4 s).

import { NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { DataDevice } from './data-device.js';
import { parseDataFormat } from './data-format.js';

const MiB = 1024 * 1024;
/** Groups overlapping three times at each of `depth` levels: 3^depth copies of `leaf` on the same bytes. */
const overlapping = (depth: number, leaf: string): string =>
  depth === 0
    ? leaf
    : `(${Array(3)
        .fill(overlapping(depth - 1, leaf))
        .join(' @0 ')})`;

/** Builds the device, timing it and measuring the heap and array buffers it leaves (after a GC, when exposed). */
function built(text: string, size?: number): { dev: DataDevice | Error; ms: number; grewMiB: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage();
  const t0 = performance.now();
  let dev: DataDevice | Error;
  try {
    dev = new DataDevice(text, size === undefined ? {} : { size });
  } catch (e) {
    dev = e as Error;
  }
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  const grew = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers;
  return { dev, ms, grewMiB: grew / MiB };
}

describe('DataDevice: hostile data strings', () => {
  // [what, the string, the size given, what comes of it: allocated bytes, or the refusal]
  const rows: [string, string, number | undefined, number | RegExp][] = [
    ['the issue: 10^8 sparse copies, size 1M', '(1 @+4095)*100000000', MiB, MiB],
    ['a repeat of 2^53 - 1 bytes, size 1M', '0x55*9007199254740991', MiB, MiB],
    ['nested repeats, size 1M', '((1 @+1)*1000 2)*1000000000', MiB, MiB],
    ['a repeat of a 1 MB string repeated 10^9 times, size 1M', '("x"*1000000)*1000000000', MiB, MiB],
    ['an offset far beyond the size', '@9007199254740000 1', MiB, 0],
    ['an offset of 1 TB, no size (a sparse device of 1 TB)', '@1000000000000 1', undefined, 32 * 1024],
    ['a slice of 2^53 - 1 bytes, no size', '(1*9007199254740991)[5:10]', undefined, 32 * 1024],
    ['an empty group 2^53 - 1 times', '()*9007199254740991', undefined, 0],
    ['an empty 1 MiB group 10^9 times, size 1M', '(@1048576)*1000000000 1', MiB, 0],
    ['10^5 overlapping items repeated 10^9 times, size 1M', `(${'1 @0 '.repeat(100_000)})*1000000000`, MiB, MiB],
    ['3^9 overlapping copies of a 1 MiB group, each zeroing it, size 1M', overlapping(9, '(1 @+1048575)'), MiB, 32 * 1024],
    [
      '1000 writes of 1 MiB over the same MiB (1 GiB written), size 1M',
      `${'(1*1048576)*2 @0 '.repeat(1000)}`,
      MiB,
      /takes more than 71303168 steps/,
    ],
    ['an empty 1 MiB group 10^9 times, no size (1 PB of zeroes)', '(@1048576)*1000000000 1', undefined, /takes more than 4294967296 steps/],
    ['4 GiB of data, no size (past the 4 Gi budget)', '1*4294967296', undefined, /takes more than 4294967296 steps/],
    [
      'repeats past 2^53 - 1 bytes',
      '((1 @+4095)*100000000)*100000000',
      MiB,
      /^data format: at character 23, the data reaches beyond 2\^53 - 1 bytes$/,
    ],
    ['an offset past 2^53 - 1 bytes', '@9007199254740991 @+1', MiB, /reaches beyond 2\^53 - 1 bytes/],
    ['groups nested 100 000 deep', `${'('.repeat(100_000)}1${')'.repeat(100_000)}`, undefined, /groups nested deeper than 1000/],
  ];
  it.each(rows)('%s: bounded by the size or refused, within 10 s and 256 MiB', (_what, text, size, outcome) => {
    const { dev, ms, grewMiB } = built(text, size);
    if (typeof outcome === 'number') {
      expect(dev).toBeInstanceOf(DataDevice);
      expect((dev as DataDevice).allocated).toBe(outcome);
    } else {
      expect(dev).toBeInstanceOf(NbdInvalidArgumentError);
      expect((dev as Error).message).toMatch(outcome);
    }
    // Unbounded, the worst of these ran for minutes (42 s for the first); 10 s is room for a loaded machine.
    expect(ms).toBeLessThan(10_000);
    // Heap growth counts garbage not yet collected (no --expose-gc here); unbounded, these grew by gigabytes.
    expect(grewMiB).toBeLessThan(256);
  });

  it('the bytes within the size are those of the whole expansion, cut (checked against a small expansion)', () => {
    const small = new DataDevice('((1 @+4095)*300 @-7 (2 3 @+5)*3)*4');
    const cut = new DataDevice('((1 @+4095)*300 @-7 (2 3 @+5)*3)*100000000', { size: small.size - 1000 });
    const a = new Uint8Array(cut.size);
    const b = new Uint8Array(cut.size);
    small.readAt(a, 0);
    cut.readAt(b, 0);
    expect(Buffer.compare(a, b)).toBe(0);
    expect(cut.extents(0, cut.size, { reqOne: false })).toEqual(small.extents(0, cut.size, { reqOne: false }));
  });

  it('a string is parsed without expanding it: lengths are known, nothing is built', () => {
    expect(parseDataFormat('(1 @+4095)*100000000').length).toBe(4096 * 100_000_000);
    expect(parseDataFormat('"ab"[1:2]*3 @^8').length).toBe(8);
    expect(() => new DataDevice('1*100000000', { maxWork: 1000 })).toThrow(/takes more than 1000 steps/);
    expect(new DataDevice('1*100000000', { size: 4096, maxWork: 10_000 }).allocated).toBe(32 * 1024);
  });
});

describe('data format: a refused string says where and what, as one sentence', () => {
  it.each([
    ['1x2', 'at character 1, "1x2" is not a number (decimal, 0-prefixed octal or 0x-prefixed hex)'],
    ['1 2 0x1g', 'at character 5, "0x1g" is not a number (decimal, 0-prefixed octal or 0x-prefixed hex)'],
    ['1*', 'at character 2, a number is missing'],
    ['1 256', 'at character 3, byte 256 is larger than 255'],
    ['(1 2', 'at character 5, a ")" is missing'],
    ['1 "ab', 'at character 3, a string has no closing "'],
    ['"ab"[1', 'at character 7, a slice needs a ":"'],
    ['"ab"[1:3]', 'at character 5, the slice [1:3] does not fit the 2 bytes before it'],
    ['"a\\q"', 'at character 3, unknown escape "\\q"'],
  ])('%s', (text, message) => {
    expect(() => parseDataFormat(text)).toThrow(new NbdInvalidArgumentError(`data format: ${message}`));
  });
});
