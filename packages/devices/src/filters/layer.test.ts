import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { describe, expect, it } from 'vitest';
import { eio, fill, io, readAll, StrictDevice, zio } from '../../test/devices.js';
import { NullDevice } from '../sources/null-device.js';
import { PatternDevice } from '../sources/pattern-device.js';
import { RandomDevice } from '../sources/random-device.js';
import { cow } from './cow.js';
import { STACK_MODULE, type StackArgs } from './layer.js';
import { log } from './log.js';
import { offset } from './offset.js';
import { openDevice } from './open-stack.js';
import { readOnly } from './read-only.js';
import { stack } from './stack.js';
import { truncate } from './truncate.js';

describe('layer', () => {
  it("gives only the methods the filter and the device below have, and the base's properties", () => {
    const ro = readOnly(new StrictDevice(1 << 20, 512));
    expect(ro.writeAt).toBeUndefined();
    expect(ro.trim).toBeUndefined();
    expect(ro.zero).toBeUndefined();
    expect(ro.readOnly).toBe(true);
    expect(ro.blockSizes?.min).toBe(512);
    expect(typeof ro.extents).toBe('function');
    const off = offset(new RandomDevice(1 << 20, { seed: 1 }), { offset: 4096 });
    expect(off.extents).toBeUndefined(); // the random device has none
    expect(off.sync).toBeUndefined();
    expect(typeof off.trim).toBe('function');
    expect(off.size).toBe((1 << 20) - 4096);
  });

  it('shares a chain whose base shares, naming every filter; not through a filter holding a callback', async () => {
    const dev = await stack(
      new NullDevice(1 << 20),
      (d) => offset(d, { offset: 4096, range: 8192 }),
      readOnly,
      (d) => truncate(d, { size: 10000 }),
    );
    const recipe = dev.share!();
    expect(recipe.module).toBe(STACK_MODULE);
    const args = recipe.args as StackArgs;
    expect(args.chain.map((s) => s.filter)).toEqual(['offset', 'read-only', 'truncate']);
    const again = await openDevice(structuredClone(args));
    expect(again.size).toBe(10000);
    expect(again.readOnly).toBe(true);
    expect(log(dev, { sink: () => {} }).share).toBeUndefined();
    expect(cow(new PatternDevice(1 << 20)).share).toBeUndefined(); // memory overlay: this thread only
  });

  it('closes the base after the filter', async () => {
    const order: string[] = [];
    const base: Device = { size: 4096, readAt: () => {}, close: () => void order.push('base') };
    const top = log(base, { sink: () => order.push('log') });
    await top.readAt(new Uint8Array(1), 0, io);
    await top.close!();
    expect(order).toEqual(['log', 'base']);
  });
});

describe('offset', () => {
  it('moves every call and refuses windows that do not fit', async () => {
    const base = new StrictDevice(1 << 20, 512);
    const dev = offset(base, { offset: 65536, range: 131072 });
    await dev.writeAt!(fill(new Uint8Array(1024), 1), 512, io);
    expect(base.bytes(65536 + 512, 1024)).toEqual(fill(new Uint8Array(1024), 1));
    await dev.zero!(512, 512, zio());
    expect(base.calls.at(-1)).toMatchObject({ op: 'zero', offset: 65536 + 512 });
    expect((await dev.extents!(0, 4096, eio()))[0]!.length).toBe(4096);
    expect(() => offset(base, { offset: 100 })).toThrow(/multiple of the device below's minimum block size 512/);
    expect(() => offset(base, { offset: -1 })).toThrow(NbdInvalidArgumentError);
  });

  // Each says what the caller gave and what is wrong with it: no range computed from an offset past the end.
  it.each([
    [{ offset: 2 << 20 }, 'offset: offset 2097152 is past the end of the 1048576-byte device below', 'offset', 2 << 20],
    [{ range: 2 << 20 }, 'offset: range 2097152 is larger than the 1048576-byte device below', 'range', 2 << 20],
    [
      { offset: 1 << 20, range: 1 },
      'offset: range 1 from offset 1048576 ends at byte 1048577, past the end of the 1048576-byte device below',
      'range',
      1,
    ],
    [{ offset: -1 }, 'offset: offset -1 is not a whole number ≥ 0', 'offset', -1],
  ])('refuses %j: "%s"', (opts, message, option, value) => {
    const base = new StrictDevice(1 << 20, 512);
    expect(() => offset(base, opts)).toThrow(message);
    expect(() => offset(base, opts)).toThrow(expect.objectContaining({ filter: 'offset', option, value }));
  });
});

describe('truncate', () => {
  it('grows with zeroes that take only zero writes, shrinks, and rounds', async () => {
    const base = new StrictDevice(1000);
    base.mem.writeAt(fill(new Uint8Array(1000), 2), 0);
    const dev = truncate(base, { size: 4096 });
    expect(dev.size).toBe(4096);
    const all = await readAll(dev);
    expect(all.subarray(0, 1000)).toEqual(fill(new Uint8Array(1000), 2));
    expect(all.subarray(1000).every((x) => x === 0)).toBe(true);
    await dev.writeAt!(new Uint8Array(100), 2000, io);
    expect(() => dev.writeAt!(Uint8Array.of(1), 2000, io)).toThrow(/only zeroes/);
    expect(await dev.extents!(0, 4096, eio())).toEqual([
      { length: 1000, flags: 0 },
      { length: 3096, flags: 3 },
    ]);
    await dev.trim!(900, 3000, io);
    expect(base.calls.at(-1)).toMatchObject({ op: 'trim', offset: 900, length: 100 });
    expect(truncate(base, { size: 10 }).size).toBe(10);
    expect(truncate(base, { roundUp: 512 }).size).toBe(1024);
    expect(truncate(base, { roundDown: 512 }).size).toBe(512);
    expect(() => truncate(base, { roundUp: 500 })).toThrow(/power of two/);
    expect(() => truncate(base, {})).toThrow(/exactly one/);
  });
});

describe('stack', () => {
  it('applies filters bottom first', async () => {
    const dev = await stack(
      Promise.resolve(new PatternDevice(1 << 20)),
      (d) => offset(d, { offset: 8 }),
      (d) => truncate(d, { size: 16 }),
    );
    expect([...(await readAll(dev))].slice(0, 8)).toEqual([0, 0, 0, 0, 0, 0, 0, 8]);
  });
});
