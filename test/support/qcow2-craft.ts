// Builds small qcow2 images byte by byte for the hostile-image table, written here
// from the format's text (docs/interop/qcow2.txt) independently of @nbd/devices, so
// that a mistake in our layout code cannot hide in the test. `craft()` makes a valid
// version 3 image (qemu-img check finds it clean) and hands its bytes and the
// offsets of every structure to a patch that breaks one thing.
import { deflateRawSync } from 'node:zlib';

export const CLUSTER = 64 * 1024;
/** Where the valid image keeps each structure (cluster-aligned byte offsets). */
export const At = {
  header: 0,
  reftable: 1 * CLUSTER,
  refblock: 2 * CLUSTER,
  l1: 3 * CLUSTER,
  l2: 4 * CLUSTER,
  data: 5 * CLUSTER,
  compressed: 6 * CLUSTER,
} as const;
/** The guest offsets the valid image maps: a data cluster and a compressed one. */
export const Guest = { data: 0, compressed: CLUSTER } as const;
/** Bytes the data cluster and the compressed cluster hold. */
export const DATA_BYTE = 0x5a;
export const COMPRESSED_BYTE = 0xc3;
export const VIRTUAL_SIZE = 4 * 1024 * 1024;

/** The image being built: its bytes (grow with `ensure`) and a view. */
export interface Crafted {
  bytes: Uint8Array;
  view: DataView;
  /** Makes the file at least `n` bytes long. */
  ensure(n: number): void;
  /** Writes a u64 (as two u32 halves, so values past 2^53 can be written exactly via `hi`). */
  u64(at: number, value: number | bigint): void;
}

/** A valid image, then `patch` applied to it. */
export function craft(patch?: (img: Crafted) => void): Uint8Array {
  const img = builder(7 * CLUSTER);
  const v = img.view;
  // header (v3, 112 bytes): magic, version, no backing file, 64 KiB clusters, 4 MiB, no encryption
  v.setUint32(0, 0x514649fb);
  v.setUint32(4, 3);
  v.setUint32(20, 16);
  img.u64(24, VIRTUAL_SIZE);
  v.setUint32(36, 1); // l1_size
  img.u64(40, At.l1);
  img.u64(48, At.reftable);
  v.setUint32(56, 1); // refcount_table_clusters
  v.setUint32(96, 4); // refcount_order: 16-bit refcounts
  v.setUint32(100, 112); // header_length
  // no header extensions: the end marker (zeroes) follows the header
  img.u64(At.reftable, At.refblock);
  for (let c = 0; c < 7; c++) v.setUint16(At.refblock + 2 * c, 1);
  img.u64(At.l1, BigInt(At.l2) | (1n << 63n));
  img.u64(At.l2, BigInt(At.data) | (1n << 63n));
  img.bytes.fill(DATA_BYTE, At.data, At.data + CLUSTER);
  const deflated = deflateRawSync(new Uint8Array(CLUSTER).fill(COMPRESSED_BYTE));
  img.bytes.set(deflated, At.compressed);
  img.u64(At.l2 + 8, compressedDescriptor(At.compressed, deflated.length));
  patch?.(img);
  return img.bytes;
}

// compressed descriptor, 64 KiB clusters (x = 54): bits 0-53 offset | 54-61 extra 512-byte sectors | 62 compressed
export function compressedDescriptor(offset: number, length: number, extraSectors?: number): bigint {
  const sectors = extraSectors ?? Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512);
  return BigInt(offset) | (BigInt(sectors) << 54n) | (1n << 62n);
}

/** Appends a header extension area (at byte 112) of `exts` (type, data), padded to 8, with its end marker. */
export function withExtensions(img: Crafted, exts: [number, Uint8Array][]): void {
  let at = 112;
  for (const [type, data] of exts) {
    img.view.setUint32(at, type);
    img.view.setUint32(at + 4, data.length);
    img.bytes.set(data, at + 8);
    at += 8 + Math.ceil(data.length / 8) * 8;
  }
  img.view.setUint32(at, 0);
  img.view.setUint32(at + 4, 0);
}

/** A feature name table entry: type (0 incompatible), bit, name. */
export function featureName(type: number, bit: number, name: string): Uint8Array {
  const e = new Uint8Array(48);
  e[0] = type;
  e[1] = bit;
  e.set(new TextEncoder().encode(name), 2);
  return e;
}

/** Sets the backing file name (after the extensions, inside the first cluster). */
export function withBacking(img: Crafted, name: string, offset = 1024): void {
  const bytes = new TextEncoder().encode(name);
  img.u64(8, offset);
  img.view.setUint32(16, bytes.length);
  img.bytes.set(bytes, offset);
}

function builder(size: number): Crafted {
  const img: Crafted = {
    bytes: new Uint8Array(size),
    view: new DataView(new ArrayBuffer(0)),
    ensure(n) {
      if (n <= img.bytes.length) return;
      const bigger = new Uint8Array(n);
      bigger.set(img.bytes);
      img.bytes = bigger;
      img.view = new DataView(bigger.buffer);
    },
    u64(at, value) {
      img.view.setBigUint64(at, BigInt(value));
    },
  };
  img.view = new DataView(img.bytes.buffer);
  return img;
}
