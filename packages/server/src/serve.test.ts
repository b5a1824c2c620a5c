// What serve() and listen() refuse before any client connects.
import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { MemoryDevice } from './memory-device.js';
import { checkExports, serve } from './serve.js';

const MiB = 1024 * 1024;

describe('checkExports', () => {
  test('an export larger than its device is refused (writes past the device would "succeed")', async () => {
    const exports = [{ name: 'big', size: 128 * MiB, device: new MemoryDevice(64 * MiB) }];
    expect(() => checkExports(exports)).toThrow(/export "big" is 134217728 bytes but its device has only 67108864/);
    await expect(serve(new PassThrough(), exports)).rejects.toThrow(RangeError);
  });

  test('an export as large as its device, or smaller, is served', () => {
    expect(() => checkExports([{ name: '', size: 64 * MiB, device: new MemoryDevice(64 * MiB) }])).not.toThrow();
    expect(() => checkExports([{ name: '', size: MiB, device: new MemoryDevice(64 * MiB) }])).not.toThrow();
  });

  test('no exports, a bad size, or no device: refused', () => {
    expect(() => checkExports([])).toThrow(/at least one export/);
    expect(() => checkExports([{ name: 'x', size: -1, device: new MemoryDevice(MiB) }])).toThrow(/bad size -1/);
    expect(() => checkExports([{ name: 'x', size: 1, device: {} as never }])).toThrow(/has no device/);
  });
});
