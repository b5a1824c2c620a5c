// The qcow2 byte layouts against the format's text: refcounts of every width (sub-byte
// ones from the least significant bit), compressed descriptors for every cluster size,
// subcluster states, header round trips, and the zstd frame walker.
import zlib from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { zstdFrameLength } from './compressed.js';
import {
  ClusterType,
  compressedEntry,
  compressedExtent,
  decodeHeader,
  encodeHeader,
  getRefcount,
  type L2Entry,
  maxRefcount,
  normalEntry,
  readL2,
  setRefcount,
  standardOffset,
  subclusterType,
  writeL2,
} from './layout.js';

describe('refcount blocks', () => {
  it('sub-byte refcounts fill each byte from the least significant bit', () => {
    const at = (order: number, index: number, value: number): number[] => {
      const b = new Uint8Array(2);
      setRefcount(new DataView(b.buffer), index, order, value);
      return [...b];
    };
    expect(at(0, 1, 1)).toEqual([0b0000_0010, 0]); // 1-bit: entry 1 is bit 1 of byte 0
    expect(at(0, 9, 1)).toEqual([0, 0b0000_0010]);
    expect(at(1, 3, 2)).toEqual([0b1000_0000, 0]); // 2-bit: entry 3 is bits 6-7
    expect(at(2, 1, 0xa)).toEqual([0xa0, 0]); // 4-bit: entry 1 is the high nibble
  });

  it.each([0, 1, 2, 3, 4, 5, 6])('order %i: set then get, neighbours untouched (model)', (order) => {
    const entries = 64;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(entries - 1), fc.nat(Math.min(maxRefcount(order), 2 ** 40))), { maxLength: 40 }), (ops) => {
        const bytes = new Uint8Array((entries * 2 ** order) / 8);
        const v = new DataView(bytes.buffer);
        const model = new Array<number>(entries).fill(0);
        for (const [i, value] of ops) {
          setRefcount(v, i, order, value);
          model[i] = value;
        }
        for (let i = 0; i < entries; i++) expect(getRefcount(v, i, order)).toBe(model[i]);
      }),
      { numRuns: 50 },
    );
  });

  it('16-bit refcounts are big-endian', () => {
    const b = new Uint8Array(4);
    setRefcount(new DataView(b.buffer), 1, 4, 0x1234);
    expect([...b]).toEqual([0, 0, 0x12, 0x34]);
  });
});

describe('L2 entries', () => {
  it.each([9, 12, 16, 21])('compressed descriptors round trip with %i cluster bits', (bits) => {
    const sectors = 2 ** (bits - 8);
    fc.assert(
      fc.property(fc.nat(2 ** 40), fc.integer({ min: 1, max: sectors * 512 - 511 }), (offset, length) => {
        const e = compressedEntry(offset, length, bits);
        const ext = compressedExtent(e, bits);
        expect(ext.offset).toBe(offset);
        // It reads through the end of the last sector the data touches.
        expect(ext.offset + ext.length).toBe(Math.ceil((offset + length) / 512) * 512);
      }),
      { numRuns: 200 },
    );
  });

  it('offsets past 2 GiB read unsigned', () => {
    const e = normalEntry(0x80000000 + 0x10000);
    expect(standardOffset(e)).toBe(0x80010000);
    const b = new DataView(new ArrayBuffer(16));
    writeL2(b, 0, false, normalEntry(2 ** 40 + 0xfffe0000));
    const out: L2Entry = { hi: 0, lo: 0, alloc: 0, zero: 0 };
    expect(standardOffset(readL2(b, 0, false, out))).toBe(2 ** 40 + 0xfffe0000);
  });

  it('subcluster states, and the impossible ones', () => {
    const host = normalEntry(0x50000, 0b0101, 0b1010);
    expect([0, 1, 2, 3].map((s) => subclusterType(host, s, true))).toEqual([
      ClusterType.NORMAL,
      ClusterType.ZERO_ALLOC,
      ClusterType.NORMAL,
      ClusterType.ZERO_ALLOC,
    ]);
    expect(subclusterType(host, 4, true)).toBe(ClusterType.UNALLOCATED_ALLOC);
    expect(subclusterType({ hi: 0, lo: 0, alloc: 0, zero: 1 }, 0, true)).toBe(ClusterType.ZERO_PLAIN);
    expect(subclusterType({ hi: 0, lo: 0, alloc: 1, zero: 0 }, 0, true)).toBeUndefined(); // allocated without a host
    expect(subclusterType(normalEntry(0x50000, 1, 1), 0, true)).toBeUndefined(); // allocated and zero
    expect(subclusterType({ ...compressedEntry(0x50000, 100, 16), zero: 1 }, 0, true)).toBeUndefined();
    expect(subclusterType({ hi: 0, lo: 1, alloc: 0, zero: 0 }, 0, false)).toBe(ClusterType.ZERO_PLAIN);
    expect(subclusterType({ ...normalEntry(0x50000), lo: 0x50001 }, 0, false)).toBe(ClusterType.ZERO_ALLOC);
  });
});

describe('header', () => {
  it('encodes and decodes version 2 and 3 headers', () => {
    for (const version of [2, 3]) {
      const h = {
        version,
        backingFileOffset: 0,
        backingFileSize: 0,
        clusterBits: 16,
        size: 2 ** 40 + 512,
        cryptMethod: 0,
        l1Size: 2049,
        l1TableOffset: 0x30000,
        refcountTableOffset: 0x10000,
        refcountTableClusters: 1,
        nbSnapshots: 0,
        snapshotsOffset: 0,
        incompatible: version === 3 ? 16n : 0n,
        compatible: version === 3 ? 1n : 0n,
        autoclear: 0n,
        refcountOrder: 4,
        headerLength: version === 3 ? 112 : 72,
        compressionType: 0,
      };
      expect(decodeHeader(encodeHeader(h))).toEqual(h);
    }
    expect(decodeHeader(new Uint8Array(100))).toBeUndefined();
  });
});

/** node:zlib's zstd (Node ≥ 22.15; @types/node 20 does not know it). */
const zstdCompressSync = (zlib as unknown as { zstdCompressSync(b: Uint8Array): Buffer }).zstdCompressSync;

describe('zstd frames', () => {
  it('the frame length is found with what follows it, and a cut frame is undefined', () => {
    const data = new Uint8Array(65536).map((_, i) => (i * 7) % 251);
    const frame = zstdCompressSync(data);
    expect(zstdFrameLength(frame)).toBe(frame.length);
    const trailing = new Uint8Array(frame.length + 300).fill(0xee);
    trailing.set(frame);
    expect(zstdFrameLength(trailing)).toBe(frame.length);
    expect(zstdFrameLength(frame.subarray(0, frame.length - 2))).toBeUndefined();
    expect(zstdFrameLength(new Uint8Array([1, 2, 3, 4, 5, 6]))).toBeUndefined();
  });
});
