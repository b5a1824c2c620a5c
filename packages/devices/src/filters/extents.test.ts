// The filters' extents, built with @nbd/server's ExtentList: clipped to the request,
// merged with equal neighbours, short where the device below answered short.

import { type Device, type DeviceExtent, ExtentList } from '@nbd/server';
import { describe, expect, it } from 'vitest';
import { eio, io } from '../../test/devices.js';
import { blocksize } from './blocksize.js';
import { cow } from './cow.js';
import { addExtents } from './layer.js';
import { truncate } from './truncate.js';

/** A device whose extents are always `answer`, whatever is asked (as a careless device might); it records what was asked. */
function answering(size: number, answer: DeviceExtent[], min = 1): Device & { asked: [number, number][] } {
  const asked: [number, number][] = [];
  return {
    size,
    asked,
    blockSizes: { min, preferred: 4096, max: 1 << 20 },
    readAt: (buf) => void buf.fill(0),
    extents: (offset, length) => {
      asked.push([offset, length]);
      return answer.map((e) => ({ ...e }));
    },
  };
}

describe('filter extents', () => {
  it('addExtents clips to the list and an end, and stops at a bad extent', () => {
    const list = new ExtentList(100, 1000);
    const end = addExtents(list, 0, [
      { length: 50, flags: 0 },
      { length: 150, flags: 3 },
      { length: 100, flags: 3 },
      { length: 0, flags: 0 },
      { length: 100, flags: 0 },
    ]);
    expect(end).toBe(300);
    expect(list.extents).toEqual([{ length: 200, flags: 3 }]);
    const capped = new ExtentList(0, 1000);
    expect(addExtents(capped, 0, [{ length: 800, flags: 0 }], 500)).toBe(500);
    expect(capped.extents).toEqual([{ length: 500, flags: 0 }]);
  });

  it('blocksize cuts the aligned answer to the unaligned request', async () => {
    const answer = [4096, 4096, 4096, 4096].map((length, i) => ({ length, flags: i % 2 === 0 ? 3 : 0 }));
    const base = answering(64 * 1024, answer, 4096);
    const dev = blocksize(base, { minBlock: 4096 });
    expect(await dev.extents!(100, 10_000, eio())).toEqual([
      { length: 3996, flags: 3 },
      { length: 4096, flags: 0 },
      { length: 1908, flags: 3 },
    ]);
    expect(base.asked).toEqual([[0, 12288]]);
  });

  it('truncate adds the hole past the end only after a full answer, and stays synchronous', () => {
    const whole = truncate(answering(1000, [{ length: 5000, flags: 3 }]), { size: 4096 });
    // The base's hole up to its end, then the hole past it: one extent.
    expect(whole.extents!(0, 4096, eio())).toEqual([{ length: 4096, flags: 3 }]);
    const short = truncate(answering(1000, [{ length: 600, flags: 0 }]), { size: 4096 });
    expect(short.extents!(0, 4096, eio())).toEqual([{ length: 600, flags: 0 }]);
    expect(short.extents!(2000, 100, eio())).toEqual([{ length: 100, flags: 3 }]);
  });

  it('cow pads a short answer of the base with data and merges copied blocks with it', async () => {
    const B = 64 * 1024;
    const dev = cow(answering(4 * B, [{ length: 100, flags: 3 }]), {});
    await dev.writeAt!(new Uint8Array(B), B, io);
    expect(await dev.extents!(0, 4 * B, eio())).toEqual([
      { length: 100, flags: 3 },
      { length: 2 * B - 100, flags: 0 },
      { length: 100, flags: 3 },
      { length: 2 * B - 100, flags: 0 },
    ]);
    expect(await dev.extents!(B, 3 * B, eio(true))).toEqual([{ length: B, flags: 0 }]);
  });
});
