import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdErrnoError } from '@nbd/protocol';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { eio, fill, io, readAll, StrictDevice, zio } from '../../test/devices.js';
import { PatternDevice } from '../sources/pattern-device.js';
import { cow } from './cow.js';
import { CowFileOverlay } from './cow-file-overlay.js';
import { readOnly } from './read-only.js';

const SIZE = 1024 * 1024 + 4096; // a short last block
const tmp = mkdtempSync(join(tmpdir(), 'nbd-cow-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A base holding known bytes, and a model of what the cow should show. */
function setup() {
  const base = new StrictDevice(SIZE, 512, 256 * 1024);
  base.mem.writeAt(fill(new Uint8Array(SIZE), 9), 0);
  const model = base.bytes(0, SIZE);
  const before = model.slice();
  return { base, model, before };
}

type Op = { kind: 'write' | 'trim' | 'zero' | 'zeroKeep'; at: number; n: number; seed: number };
const op = fc.record({
  kind: fc.constantFrom('write', 'trim', 'zero', 'zeroKeep'),
  at: fc.integer({ min: 0, max: SIZE / 512 - 1 }).map((x) => x * 512),
  n: fc.integer({ min: 1, max: 400 }).map((x) => x * 512),
  seed: fc.integer({ min: 1, max: 1000 }),
}) as fc.Arbitrary<Op>;

describe('cow', () => {
  it('shows every write, trim and zero while the base stays untouched (random operations)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        const { base, model, before } = setup();
        const dev = cow(readOnly(base), { blockSize: 64 * 1024 });
        const trimmed: [number, number][] = [];
        for (const o of ops) {
          const n = Math.min(o.n, SIZE - o.at);
          if (o.kind === 'write') {
            const data = fill(new Uint8Array(n), o.seed);
            await dev.writeAt!(data, o.at, io);
            model.set(data, o.at);
          } else if (o.kind === 'trim') {
            await dev.trim!(o.at, n, io);
            trimmed.push([o.at, n]);
          } else {
            await dev.zero!(o.at, n, zio({ noHole: o.kind === 'zeroKeep' }));
            model.fill(0, o.at, o.at + n);
          }
        }
        const got = await readAll(dev);
        // Trimmed bytes are unspecified (whole blocks read as zero, partial ones keep their data).
        for (const [at, n] of trimmed) got.set(model.subarray(at, at + n), at);
        expect(Buffer.compare(got, model)).toBe(0);
        expect(Buffer.compare(base.bytes(0, SIZE), before)).toBe(0);
        expect(base.calls.every((c) => c.op === 'read' || c.op === 'extents')).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('reports copied blocks as data, zeroed blocks as holes, and asks the base for the rest', async () => {
    const { base } = setup();
    base.mem.trim(512 * 1024, 256 * 1024); // a hole in the base
    const dev = cow(base);
    await dev.writeAt!(Uint8Array.of(1), 600 * 1024, io); // inside the base's hole: that block is copied
    await dev.zero!(0, 128 * 1024, zio());
    const ext = await dev.extents!(0, SIZE, eio());
    expect(ext.slice(0, 4)).toEqual([
      { length: 128 * 1024, flags: 3 },
      { length: 384 * 1024, flags: 0 },
      { length: 64 * 1024, flags: 3 },
      { length: 64 * 1024, flags: 0 },
    ]);
    expect((await dev.extents!(0, SIZE, eio(true))).length).toBe(1);
  });

  it('refuses a fast zero that needs a read-modify-write, and copies on read when asked', async () => {
    const { base } = setup();
    const dev = cow(base, { onRead: true });
    await expect(dev.zero!(512, 512, zio({ fast: true }))).rejects.toBeInstanceOf(NbdErrnoError);
    await dev.zero!(0, 64 * 1024, zio({ fast: true }));
    const b = new Uint8Array(128 * 1024);
    await dev.readAt(b, 128 * 1024, io);
    const reads = base.calls.filter((c) => c.op === 'read').length;
    await dev.readAt(b, 128 * 1024, io);
    expect(base.calls.filter((c) => c.op === 'read').length).toBe(reads); // served from the overlay
  });

  it('keeps concurrent partial writes to one block (block lock)', async () => {
    const { base, model } = setup();
    const dev = cow(base);
    const writes = [];
    for (let i = 0; i < 64; i++) {
      const data = fill(new Uint8Array(512), i + 1);
      model.set(data, i * 1024);
      writes.push(dev.writeAt!(data, i * 1024, io));
    }
    await Promise.all(writes);
    expect(Buffer.compare(await readAll(dev), model)).toBe(0);
  });

  it('refuses layers that disagree', () => {
    const big = new StrictDevice(SIZE, 512, 32 * 1024);
    expect(() => cow(big)).toThrow("cow: blockSize 65536 is larger than the device below's maximum payload 32768");
    expect(() => cow(new PatternDevice(SIZE), { blockSize: 1000 })).toThrow(/power of two/);
    expect(() => cow(new PatternDevice(SIZE), { overlay: new PatternDevice(SIZE) })).toThrow(/not writable/);
  });
});

describe('CowFileOverlay', () => {
  it('gives back after a reopen everything flushed, and is shareable', async () => {
    const path = join(tmp, 'overlay');
    const base = new PatternDevice(SIZE);
    const overlay = await CowFileOverlay.open(path, { size: SIZE, fresh: true });
    const dev = cow(base, { overlay });
    const data = fill(new Uint8Array(100_000), 5);
    await dev.writeAt!(data, 3000, io);
    await dev.zero!(512 * 1024, 64 * 1024, zio());
    await dev.sync!(io);
    const want = await readAll(dev);
    expect(dev.share).toBeTypeOf('function');
    // No close: as if the process were killed after the flush.
    const again = cow(base, { overlay: await CowFileOverlay.open(path, { size: SIZE }) });
    expect(Buffer.compare(await readAll(again), want)).toBe(0);
    await expect(CowFileOverlay.open(path, { size: SIZE * 2 })).rejects.toThrow(/made for size/);
    await again.close!();
    await dev.close!();
  });
});
