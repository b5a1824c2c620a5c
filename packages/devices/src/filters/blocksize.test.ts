import { NbdErrnoError } from '@nbd/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { eio, fill, io, readAll, StrictDevice, zio } from '../../test/devices.js';
import { blocksize } from './blocksize.js';

const SIZE = 256 * 1024 + 1000; // the adapter rounds this down to 4096

describe('blocksize', () => {
  it('serves any alignment from a 4096-byte device that refuses anything else (random operations)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            kind: fc.constantFrom('write', 'read', 'zero', 'trim', 'extents'),
            at: fc.integer({ min: 0, max: 256 * 1024 - 1 }),
            n: fc.integer({ min: 1, max: 40_000 }),
            seed: fc.integer({ min: 1, max: 999 }),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        async (ops) => {
          const base = new StrictDevice(SIZE, 4096, 16 * 1024);
          const dev = blocksize(base, { minBlock: 4096, maxData: 16 * 1024, maxLen: 64 * 1024 });
          expect(dev.size).toBe(256 * 1024);
          const model = new Uint8Array(256 * 1024);
          for (const o of ops) {
            const n = Math.min(o.n, dev.size! - o.at);
            if (o.kind === 'write') {
              const data = fill(new Uint8Array(n), o.seed);
              await dev.writeAt!(data, o.at, io);
              model.set(data, o.at);
            } else if (o.kind === 'zero') {
              await dev.zero!(o.at, n, zio());
              model.fill(0, o.at, o.at + n);
            } else if (o.kind === 'read') {
              const b = new Uint8Array(n);
              await dev.readAt(b, o.at, io);
              expect(Buffer.compare(b, model.subarray(o.at, o.at + n))).toBe(0);
            } else if (o.kind === 'extents') {
              const ext = await dev.extents!(o.at, n, eio());
              expect(ext.reduce((s, e) => s + e.length, 0)).toBeLessThanOrEqual(n);
              expect(ext[0]!.length).toBeGreaterThan(0);
            } else {
              // Trim only the aligned middle: whole blocks read back as zero, the rest stays.
              await dev.trim!(o.at, n, io);
              const first = Math.ceil(o.at / 4096) * 4096;
              const end = Math.floor((o.at + n) / 4096) * 4096;
              if (first < end) model.fill(0, first, end);
            }
          }
          expect(Buffer.compare(await readAll(dev), model)).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('keeps concurrent unaligned writes to one block, and refuses an unaligned fast zero', async () => {
    const base = new StrictDevice(SIZE, 4096);
    const dev = blocksize(base, { minBlock: 4096 });
    const model = new Uint8Array(8192);
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        const data = fill(new Uint8Array(100), i + 1);
        model.set(data, i * 256);
        return dev.writeAt!(data, i * 256, io);
      }),
    );
    expect(Buffer.compare(base.bytes(0, 8192), model)).toBe(0);
    expect(() => dev.zero!(1, 4096, zio({ fast: true }))).toThrow(NbdErrnoError);
    await dev.zero!(0, 8192, zio({ fast: true }));
    expect(dev.blockSizes).toEqual({ min: 1, preferred: 4096, max: 0xffffffff });
  });

  it('fails at build time when it does not fit the device below', () => {
    const base = new StrictDevice(SIZE, 4096, 32 * 1024);
    expect(() => blocksize(base, { minBlock: 65536 })).toThrow(/minBlock 65536 is larger than the device below's maximum payload 32768/);
    expect(() => blocksize(base, { minBlock: 512 })).toThrow(/not a multiple of the device below's minimum block size 4096/);
    expect(() => blocksize(base, { maxData: 64 * 1024 })).toThrow(/maxData 65536 is larger/);
    expect(() => blocksize(base, { minBlock: 3000 })).toThrow(/power of two/);
    expect(() => blocksize(base, { maxData: 5000 })).toThrow(
      'blocksize: maxData 5000 is not a positive multiple of the minimum block size 4096',
    );
  });
});
