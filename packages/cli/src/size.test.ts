import { describe, expect, test } from 'vitest';
import { UsageError } from './errors.js';
import { humanSize, parseSize, roundedSize } from './size.js';

describe('parseSize', () => {
  test.each([
    ['512', 512],
    ['1k', 1024],
    ['4KiB', 4096],
    ['64M', 64 << 20],
    ['1G', 2 ** 30],
    ['1GB', 2 ** 30],
    ['1.5G', 1.5 * 2 ** 30],
    ['2s', 1024],
    ['8E', 8 * 2 ** 60 > Number.MAX_SAFE_INTEGER ? NaN : 0],
    ['1T', 2 ** 40],
    [' 3 m ', 3 << 20],
  ])('%s', (text, bytes) => {
    if (Number.isNaN(bytes)) expect(() => parseSize('serve', 'memory', text)).toThrow(/larger than 2\^53/);
    else expect(parseSize('serve', 'memory', text)).toBe(bytes);
  });

  test.each(['', '1Q', '-1', 'G', '1.3', '0x10', '1 2'])('%j is a usage error naming the command', (text) => {
    const err = (() => {
      try {
        parseSize('serve', 'memory', text);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UsageError);
    expect(err).toMatchObject({ command: 'serve', code: 'NBD_ERR_INVALID_ARGUMENT' });
  });
});

describe('sizes for people', () => {
  test("humanSize is nbdinfo's export-size-str", () => {
    expect([0, 1, 512, 1024, 1536 * 1024, 2 ** 30, 3 * 2 ** 40 + 2 ** 30, 2 ** 53 - 1].map(humanSize)).toEqual([
      '0',
      '1',
      '512',
      '1K',
      '1536K',
      '1G',
      '3073G',
      '9007199254740991',
    ]);
  });
  test('roundedSize', () => {
    expect([0, 1023, 1024, 1536, 8 * 2 ** 30].map(roundedSize)).toEqual(['0 B', '1023 B', '1.0 KiB', '1.5 KiB', '8.0 GiB']);
  });
});
