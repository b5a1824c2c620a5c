import { Errno, NbdErrnoError, NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { DeviceOptionError } from '../option-error.js';
import { DataDevice } from './data-device.js';
import { NullDevice, ZeroDevice } from './null-device.js';
import { openDevice } from './open-source.js';
import { fillPattern, PatternDevice } from './pattern-device.js';
import { Xoshiro256 } from './prng.js';
import { RandomDevice } from './random-device.js';
import { SPARSE_RANDOM_BLOCK, SparseRandomDevice } from './sparse-random-device.js';

const io = { fua: false, signal: new AbortController().signal };
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** xoshiro256** seeded through splitmix64, in BigInt: the reference our uint32 pairs must match. */
function reference(seed: bigint): () => bigint {
  const M = (1n << 64n) - 1n;
  let st = seed;
  const mix = () => {
    st = (st + 0x9e3779b97f4a7c15n) & M;
    let z = st;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    return z ^ (z >> 31n);
  };
  const s = [mix(), mix(), mix(), mix()];
  const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (64n - k))) & M;
  return () => {
    const r = (rotl((s[1]! * 5n) & M, 7n) * 9n) & M;
    const t = (s[1]! << 17n) & M;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 45n);
    return r;
  };
}

describe('Xoshiro256', () => {
  it('matches xoshiro256**/splitmix64 computed in BigInt, for small and large seeds', () => {
    for (const seed of [0, 1, 12345, 0xffffffff, 2 ** 40 + 7, 2 ** 52 + 3]) {
      const ours = new Xoshiro256(seed);
      const ref = reference(BigInt(seed));
      for (let i = 0; i < 200; i++) {
        const lo = ours.next();
        expect((BigInt(ours.hi) << 32n) | BigInt(lo)).toBe(ref());
      }
    }
  });
});

describe('PatternDevice', () => {
  it("holds each 8-byte word's offset, big-endian, at any alignment", () => {
    const dev = new PatternDevice(1 << 20);
    const b = new Uint8Array(24);
    dev.readAt(b, 0x20);
    expect(hex(b)).toBe('0000000000000020' + '0000000000000028' + '0000000000000030');
    const odd = new Uint8Array(5);
    dev.readAt(odd, 0x2b); // bytes 3..7 of word 0x28
    expect(hex(odd)).toBe('0000000028');
    const tiny = new Uint8Array(2);
    fillPattern(tiny, 6);
    expect(hex(tiny)).toBe('0000');
    const high = new Uint8Array(8);
    fillPattern(high, 2 ** 40 + 8);
    expect(hex(high)).toBe('0000010000000008');
    expect(dev.readOnly).toBe(true);
    expect('writeAt' in dev).toBe(false);
  });
});

describe('NullDevice and ZeroDevice', () => {
  it('read zeroes, report one hole; null takes writes, zero is read-only and 0 bytes by default', () => {
    const n = new NullDevice(4096);
    n.writeAt();
    const b = new Uint8Array(16).fill(7);
    n.readAt(b);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(n.extents(0, 4096)).toEqual([{ length: 4096, flags: 3 }]);
    expect(n.lend(0, 3 << 20).views.reduce((s, v) => s + v.length, 0)).toBe(3 << 20);
    expect(new ZeroDevice().size).toBe(0);
    expect(new ZeroDevice(10).readOnly).toBe(true);
    expect(() => new NullDevice(-1)).toThrow(NbdInvalidArgumentError);
  });
});

describe('RandomDevice', () => {
  it('is the same for a seed, differs between seeds, and accepts only writes of what it holds', () => {
    const a = new RandomDevice(1 << 20, { seed: 42 });
    const b = new RandomDevice(1 << 20, { seed: 42 });
    const x = new Uint8Array(4096);
    const y = new Uint8Array(4096);
    a.readAt(x, 1000);
    b.readAt(y, 1000);
    expect(x).toEqual(y);
    // Byte i is independent of where the read starts.
    const z = new Uint8Array(10);
    a.readAt(z, 1005);
    expect(z).toEqual(x.subarray(5, 15));
    new RandomDevice(1 << 20, { seed: 43 }).readAt(y, 1000);
    expect(x).not.toEqual(y);
    a.writeAt(x, 1000);
    x[7]! ^= 1;
    expect(() => a.writeAt(x, 1000)).toThrow(NbdErrnoError);
    expect(() => a.trim()).toThrow(/cannot be trimmed/);
    // Byte values look uniform: each of 256 values appears in 64 KiB.
    const big = new Uint8Array(65536);
    a.readAt(big, 0);
    expect(new Set(big).size).toBe(256);
  });
});

describe('SparseRandomDevice', () => {
  it('hits its percentage and run length, and its map matches its bytes', () => {
    const size = 256 * 1024 * 1024;
    const dev = new SparseRandomDevice(size, { seed: 7, percent: 25, runLength: 1024 * 1024 });
    let data = 0;
    let runs = 0;
    const blocks = size / SPARSE_RANDOM_BLOCK;
    for (let b = 0; b < blocks; b++) {
      if (!dev.isData(b)) continue;
      data++;
      if (b === 0 || !dev.isData(b - 1)) runs++;
    }
    expect(data / blocks).toBeGreaterThan(0.2);
    expect(data / blocks).toBeLessThan(0.3);
    const meanRun = (data / runs) * SPARSE_RANDOM_BLOCK;
    expect(meanRun).toBeGreaterThan(0.7 * 1024 * 1024);
    expect(meanRun).toBeLessThan(1.4 * 1024 * 1024);
    // Extents agree with the bytes: data blocks are one repeated non-zero byte, holes zero.
    const ext = dev.extents(0, 64 * 1024 * 1024, { reqOne: false });
    let at = 0;
    for (const e of ext.slice(0, 20)) {
      const b = new Uint8Array(SPARSE_RANDOM_BLOCK);
      dev.readAt(b, at);
      if (e.flags === 0) expect(b[0]).not.toBe(0);
      else expect(b.every((x) => x === 0)).toBe(true);
      at += e.length;
    }
  });

  it("trims and zeroes holes only, verifies writes, and is the same map in another thread's copy", () => {
    const dev = new SparseRandomDevice(64 * 1024 * 1024, { seed: 3, percent: 50, runLength: 256 * 1024 });
    const ext = dev.extents(0, dev.size, { reqOne: false });
    const hole = ext.findIndex((e) => e.flags !== 0);
    const holeAt = ext.slice(0, hole).reduce((s, e) => s + e.length, 0);
    dev.trim(holeAt, 4096);
    expect(() => dev.zero(0, dev.size)).toThrow(NbdErrnoError);
    const b = new Uint8Array(8192);
    dev.readAt(b, 0);
    dev.writeAt(b, 0);
    const copy = openDevice(dev.share().args) as SparseRandomDevice;
    expect(copy.extents(0, dev.size, { reqOne: false })).toEqual(ext);
    expect(() => new SparseRandomDevice(1, { percent: 101 })).toThrow(NbdInvalidArgumentError);
    // The option as the API names it, so nbd serve can say runlength=0 instead.
    const refused = (() => {
      try {
        return new SparseRandomDevice(1, { runLength: 0 });
      } catch (e) {
        return e;
      }
    })();
    expect(refused).toBeInstanceOf(DeviceOptionError);
    expect(refused).toMatchObject({
      message: 'SparseRandomDevice: runLength 0 is not a length of 1 byte or more',
      device: 'SparseRandomDevice',
      option: 'runLength',
      value: 0,
    });
  });

  it('fully random content differs byte to byte', () => {
    const dev = new SparseRandomDevice(16 * 1024 * 1024, { seed: 1, percent: 100, randomContent: true });
    const b = new Uint8Array(4096);
    dev.readAt(b, 4096);
    expect(new Set(b).size).toBeGreaterThan(200);
  });
});

describe('DataDevice', () => {
  // Sizes and bytes as nbdkit 1.32's data plugin serves them (checked with nbdkit data ... --run 'nbdcopy $uri -').
  const cases: [string, number, string][] = [
    ['1 @0x1000', 4096, '01000000'],
    ['1 2 3 @^512', 512, '01020300'],
    ['( 0x55 0xAA )*4', 8, '55aa55aa55aa55aa'],
    ['( 1 2 3 4 )[1:3]*2', 4, '02030203'],
    ['"Hi\\n"*2', 6, '48690a48690a'],
    ['1 @+4 2 @-2 3', 6, '010000000302'],
    ['le32:0x01020304 be16:0x0506', 6, '040302010506'],
    ['(@4 1)*2', 10, '00000000010000000001'],
    ['(1 2 3 4)[2:]', 2, '0304'],
    ['0x41*3 # comment\n 0x42', 4, '41414142'],
    ['017 0x1f 255', 3, '0f1fff'],
    // A group is an image of its own: what it leaves unwritten is zeroes where it lands (nbdkit 1.32 serves these bytes).
    ['1*8 @0 (@4 2)*2', 10, '00000000020000000002'],
    ['1*8 @0 (@4)', 8, '0000000001010101'],
    ['3*6 @0 (1 @+1)*2', 6, '010001000303'],
    ['1*8 @0 ((@2)*2)[1:3]', 8, '0000010101010101'],
    ['1*8 @0 @4 2', 8, '0101010102010101'],
    ['1*8 @4 (2 @-1 3)', 8, '0101010103010101'],
  ];
  it.each(cases)('%j is %i bytes starting %s', (spec, size, start) => {
    const dev = new DataDevice(spec);
    expect(dev.size).toBe(size);
    const b = new Uint8Array(start.length / 2);
    dev.readAt(b, 0);
    expect(hex(b)).toBe(start);
  });

  it('pads or truncates to size, takes bytes and arrays, is sparse, and refuses what it does not support', () => {
    const dev = new DataDevice('( 0x55 0xAA )*2048 @0x50000 1', { size: 1 << 20 });
    expect(dev.extents(0, 1 << 20, { reqOne: false })).toEqual([
      { length: 32768, flags: 0 },
      { length: 294912, flags: 3 },
      { length: 32768, flags: 0 },
      { length: 688128, flags: 3 },
    ]);
    // Zero pages stay holes, even where zeroes overwrite data (nbdkit's maps).
    expect(new DataDevice('0*100000 1').extents(0, 100001, { reqOne: false })).toEqual([
      { length: 98304, flags: 3 },
      { length: 1697, flags: 0 },
    ]);
    expect(new DataDevice('1*40000 @0 0*40000').allocated).toBe(0);
    const big = new DataDevice('(0x55*1048576)*3 @^4096 0*5000000');
    expect(big.allocated).toBe(3 * 1024 * 1024);
    expect(new DataDevice([1, 2, 3], { size: 2 }).size).toBe(2);
    expect(new DataDevice(Uint8Array.of(9, 8)).size).toBe(2);
    expect(() => new DataDevice([256])).toThrow(/not a byte/);
    for (const bad of ['256', '"abc', '<file', '(1 2', '1 @-5', '$var', '1 [0:2]'])
      expect(() => new DataDevice(bad), bad).toThrow(NbdInvalidArgumentError);
    const w = new DataDevice('1 2 3');
    w.writeAt!(Uint8Array.of(9), 1, io);
    const b = new Uint8Array(3);
    w.readAt(b, 0);
    expect([...b]).toEqual([1, 9, 3]);
    expect(w.share).toBeUndefined();
    const ro = new DataDevice('1 2 3', { readOnly: true });
    expect(ro.writeAt).toBeUndefined();
    expect((openDevice(ro.share!().args) as DataDevice).size).toBe(3);
  });
});

describe('open-source', () => {
  it('rebuilds every shareable source and refuses an unknown kind', () => {
    expect(openDevice(new NullDevice(5).share().args).size).toBe(5);
    expect(openDevice(new ZeroDevice(6).share().args).readOnly).toBe(true);
    expect(openDevice(new PatternDevice(7).share().args).size).toBe(7);
    expect((openDevice(new RandomDevice(8, { seed: 1 }).share().args) as RandomDevice).seed).toBe(1);
    expect(() => openDevice({ kind: 'nope' })).toThrow(NbdInvalidArgumentError);
    expect(Errno.EIO).toBe(5);
  });
});
