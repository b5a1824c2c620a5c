// qcow2's on-disk layout (qemu's docs/interop/qcow2.txt), every byte of it in this
// one file: the header and its extensions, L1/L2 entries (standard, compressed,
// extended with a subcluster bitmap), refcount table entries and refcount blocks of
// every width. Pure functions over bytes, big-endian throughout; no I/O. 64-bit
// offsets are read as two 32-bit halves into numbers: a value past 2^53 comes out
// as a number that is not a safe integer, which the callers reject.

/** "QFI\xfb". */
export const QCOW_MAGIC = 0x514649fb;
/** A version 2 header ends after snapshots_offset. */
export const HEADER_V2_LENGTH = 72;
/** A version 3 header holds at least the fields through header_length. */
export const HEADER_V3_MIN_LENGTH = 104;
/** The version 3 header qemu writes: compression_type (byte 104) and padding to 8. */
export const HEADER_V3_LENGTH = 112;
/** Cluster sizes qemu can open: 512 B (9) to 2 MiB (21). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Extended L2 entries need clusters of at least 16 KiB (32 subclusters of 512 B). */
export const MIN_EXTENDED_CLUSTER_BITS = 14;
/** Subclusters per cluster with extended L2 entries. */
export const SUBCLUSTERS = 32;
/** qemu's implementation limits: 32 MiB of L1 table, 8 MiB of refcount table, 65536 snapshots. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
/** A backing file name is at most 1023 bytes. */
export const MAX_BACKING_NAME = 1023;
/** Compressed data is counted in 512-byte sectors. */
export const COMPRESSED_SECTOR = 512;

// u32 magic | u32 version | u64 backing_file_offset | u32 backing_file_size | u32 cluster_bits | u64 size
// | u32 crypt_method | u32 l1_size | u64 l1_table_offset | u64 refcount_table_offset | u32 refcount_table_clusters
// | u32 nb_snapshots | u64 snapshots_offset || v3: u64 incompatible | u64 compatible | u64 autoclear
// | u32 refcount_order | u32 header_length | u8 compression_type | padding to a multiple of 8
/** Byte offsets of the header fields written in place. */
export const HeaderField = {
  BACKING_FILE_OFFSET: 8,
  L1_SIZE: 36,
  L1_TABLE_OFFSET: 40,
  REFCOUNT_TABLE_OFFSET: 48,
  REFCOUNT_TABLE_CLUSTERS: 56,
  INCOMPATIBLE_FEATURES: 72,
  AUTOCLEAR_FEATURES: 88,
} as const;

/** incompatible_features bits: an unknown one means the image must not be opened. */
export const Incompatible = { DIRTY: 1n, CORRUPT: 2n, DATA_FILE: 4n, COMPRESSION_TYPE: 8n, EXTENDED_L2: 16n } as const;
export const KNOWN_INCOMPATIBLE = 31n;
/** compatible_features bits. */
export const Compatible = { LAZY_REFCOUNTS: 1n } as const;
/** autoclear_features bits: a writer that does not know one clears it. */
export const Autoclear = { BITMAPS: 1n, RAW_EXTERNAL: 2n } as const;
/** crypt_method values. */
export const CryptMethod = { NONE: 0, AES: 1, LUKS: 2 } as const;
/** compression_type values. */
export const CompressionType = { ZLIB: 0, ZSTD: 1 } as const;
/** Header extension types. */
export const Extension = {
  END: 0,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_NAMES: 0x6803f857,
  BITMAPS: 0x23852875,
  ENCRYPTION: 0x0537be77,
  DATA_FILE: 0x44415441,
} as const;

/** The fixed header, decoded as it is (checked by header.ts). */
export interface QcowHeader {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  /** refcount_bits = 1 << refcountOrder; 4 for version 2. */
  refcountOrder: number;
  /** 72 for version 2. */
  headerLength: number;
  /** 0 (zlib) when the field is absent. */
  compressionType: number;
}

/** A u64 as a number (exact below 2^53; callers check `Number.isSafeInteger`). */
export function readU64(view: DataView, at: number): number {
  return view.getUint32(at) * 0x1_0000_0000 + view.getUint32(at + 4);
}

/** Writes a safe integer as a u64. */
export function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 0x1_0000_0000));
  view.setUint32(at + 4, value >>> 0);
}

/** True if `bytes` starts with the qcow2 magic (for format probing). */
export function hasQcowMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0) === QCOW_MAGIC;
}

/** Decodes the header from the first bytes of the file (at least 72; 112 holds every v3 field). Undefined if the magic is wrong. */
export function decodeHeader(bytes: Uint8Array): QcowHeader | undefined {
  if (bytes.length < HEADER_V2_LENGTH || !hasQcowMagic(bytes)) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint32(4);
  const v3 = version >= 3 && bytes.length >= HEADER_V3_MIN_LENGTH;
  const headerLength = v3 ? v.getUint32(100) : HEADER_V2_LENGTH;
  return {
    version,
    backingFileOffset: readU64(v, 8),
    backingFileSize: v.getUint32(16),
    clusterBits: v.getUint32(20),
    size: readU64(v, 24),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: readU64(v, 40),
    refcountTableOffset: readU64(v, 48),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    snapshotsOffset: readU64(v, 64),
    incompatible: v3 ? v.getBigUint64(72) : 0n,
    compatible: v3 ? v.getBigUint64(80) : 0n,
    autoclear: v3 ? v.getBigUint64(88) : 0n,
    refcountOrder: v3 ? v.getUint32(96) : 4,
    headerLength,
    compressionType: v3 && headerLength > 104 && bytes.length > 104 ? v.getUint8(104) : 0,
  };
}

/** Encodes a header (`headerLength` bytes: 72 for version 2, 112 for version 3). */
export function encodeHeader(h: QcowHeader): Uint8Array {
  const bytes = new Uint8Array(h.version >= 3 ? HEADER_V3_LENGTH : HEADER_V2_LENGTH);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, QCOW_MAGIC);
  v.setUint32(4, h.version);
  writeU64(v, 8, h.backingFileOffset);
  v.setUint32(16, h.backingFileSize);
  v.setUint32(20, h.clusterBits);
  writeU64(v, 24, h.size);
  v.setUint32(32, h.cryptMethod);
  v.setUint32(36, h.l1Size);
  writeU64(v, 40, h.l1TableOffset);
  writeU64(v, 48, h.refcountTableOffset);
  v.setUint32(56, h.refcountTableClusters);
  v.setUint32(60, h.nbSnapshots);
  writeU64(v, 64, h.snapshotsOffset);
  if (h.version < 3) return bytes;
  v.setBigUint64(72, h.incompatible);
  v.setBigUint64(80, h.compatible);
  v.setBigUint64(88, h.autoclear);
  v.setUint32(96, h.refcountOrder);
  v.setUint32(100, HEADER_V3_LENGTH);
  v.setUint8(104, h.compressionType);
  return bytes;
}

/** One header extension: its type and data. */
export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

// u32 type | u32 length | data | padding to a multiple of 8; type 0 ends the list
/** Decodes the extensions in `bytes` (the area after the header). Throws a plain Error naming what is wrong. */
export function decodeExtensions(bytes: Uint8Array): HeaderExtension[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: HeaderExtension[] = [];
  for (let at = 0; at + 8 <= bytes.length; ) {
    const type = v.getUint32(at);
    if (type === Extension.END) return out;
    const length = v.getUint32(at + 4);
    if (length > bytes.length - at - 8)
      throw new Error(`header extension 0x${type.toString(16)} (${length} bytes) overruns the first cluster`);
    out.push({ type, data: bytes.subarray(at + 8, at + 8 + length) });
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return out;
}

/** Encodes extensions followed by the end marker. */
export function encodeExtensions(exts: HeaderExtension[]): Uint8Array {
  const size = exts.reduce((n, e) => n + 8 + Math.ceil(e.data.length / 8) * 8, 8);
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  let at = 0;
  for (const e of exts) {
    v.setUint32(at, e.type);
    v.setUint32(at + 4, e.data.length);
    bytes.set(e.data, at + 8);
    at += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  return bytes;
}

// u8 type (0 incompatible, 1 compatible, 2 autoclear) | u8 bit | char name[46]
/** The feature name table extension: names for feature bits, to say which unknown bit is set. */
export function decodeFeatureNames(data: Uint8Array): { type: number; bit: number; name: string }[] {
  const out: { type: number; bit: number; name: string }[] = [];
  for (let at = 0; at + 48 <= data.length; at += 48) {
    const raw = data.subarray(at + 2, at + 48);
    const end = raw.indexOf(0);
    out.push({ type: data[at]!, bit: data[at + 1]!, name: new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end)) });
  }
  return out;
}

// ------------------------------------------------------------ L1 and refcount table entries

// L1 entry: bits 0-8 reserved | 9-55 L2 table offset | 56-62 reserved | 63 COPIED
/** The L2 table offset of an L1 entry (0: no table). */
export function l1Offset(view: DataView, index: number): number {
  const at = index * 8;
  return (view.getUint32(at) & 0x00ffffff) * 0x1_0000_0000 + ((view.getUint32(at + 4) & 0xfffffe00) >>> 0);
}

/** True if reserved bits of an L1 entry are set. */
export function l1Reserved(view: DataView, index: number): boolean {
  const at = index * 8;
  return (view.getUint32(at) & 0x7f000000) !== 0 || (view.getUint32(at + 4) & 0x1ff) !== 0;
}

/** Sets an L1 entry to a table we own alone (COPIED). */
export function setL1(view: DataView, index: number, offset: number): void {
  const at = index * 8;
  view.setUint32(at, (Math.floor(offset / 0x1_0000_0000) | 0x80000000) >>> 0);
  view.setUint32(at + 4, offset >>> 0);
}

// refcount table entry: bits 0-8 reserved | 9-63 refcount block offset
/** The refcount block offset of a refcount table entry (0: none yet; all its refcounts are 0). */
export function reftableOffset(view: DataView, index: number): number {
  const at = index * 8;
  return view.getUint32(at) * 0x1_0000_0000 + ((view.getUint32(at + 4) & 0xfffffe00) >>> 0);
}

/** True if reserved bits of a refcount table entry are set. */
export function reftableReserved(view: DataView, index: number): boolean {
  return (view.getUint32(index * 8 + 4) & 0x1ff) !== 0;
}

export function setReftable(view: DataView, index: number, offset: number): void {
  writeU64(view, index * 8, offset);
}

// ------------------------------------------------------------ L2 entries

/** What an L2 entry (or one subcluster of an extended one) says about guest data. */
export const ClusterType = {
  /** Read from the backing file, or zeroes without one. */
  UNALLOCATED: 0,
  /** Reads as zeroes; no host cluster. */
  ZERO_PLAIN: 1,
  /** Reads as zeroes; a host cluster stays reserved. */
  ZERO_ALLOC: 2,
  /** Data at the host offset. */
  NORMAL: 3,
  /** Compressed data somewhere in the file. */
  COMPRESSED: 4,
  /** Unallocated subcluster of an allocated host cluster (extended L2): read from backing. */
  UNALLOCATED_ALLOC: 5,
} as const;
export type ClusterType = (typeof ClusterType)[keyof typeof ClusterType];

/** An L2 entry's words: the descriptor halves and, with extended L2, the bitmap halves. */
export interface L2Entry {
  /** Bits 32-63: COPIED (63), COMPRESSED (62), offset bits 32-55. */
  hi: number;
  /** Bits 0-31: ZERO (0), offset bits 9-31. */
  lo: number;
  /** Subcluster allocation bits (bitmap bits 0-31); 0 without extended L2. */
  alloc: number;
  /** Subcluster zero bits (bitmap bits 32-63); 0 without extended L2. */
  zero: number;
}

const COPIED = 0x80000000;
const COMPRESSED = 0x40000000;

/** Bytes per L2 entry. */
export const l2EntryBytes = (extended: boolean): number => (extended ? 16 : 8);

/** Reads entry `index` of an L2 table into `out` (reused, so the hot path allocates nothing). */
export function readL2(view: DataView, index: number, extended: boolean, out: L2Entry): L2Entry {
  const at = index * (extended ? 16 : 8);
  out.hi = view.getUint32(at);
  out.lo = view.getUint32(at + 4);
  // bitmap: bits 0-31 allocation (low word), bits 32-63 zeroes (high word)
  out.zero = extended ? view.getUint32(at + 8) : 0;
  out.alloc = extended ? view.getUint32(at + 12) : 0;
  return out;
}

/** Writes entry `index` of an L2 table. */
export function writeL2(view: DataView, index: number, extended: boolean, e: L2Entry): void {
  const at = index * (extended ? 16 : 8);
  view.setUint32(at, e.hi >>> 0);
  view.setUint32(at + 4, e.lo >>> 0);
  if (!extended) return;
  view.setUint32(at + 8, e.zero >>> 0);
  view.setUint32(at + 12, e.alloc >>> 0);
}

/** An entry for a host cluster we own alone: offset | COPIED. */
export function normalEntry(offset: number, alloc = 0, zero = 0): L2Entry {
  return { hi: (Math.floor(offset / 0x1_0000_0000) | COPIED) >>> 0, lo: offset >>> 0, alloc, zero };
}

export const isCompressed = (e: L2Entry): boolean => (e.hi & COMPRESSED) !== 0;
export const isCopied = (e: L2Entry): boolean => (e.hi & COPIED) !== 0;
/** The standard descriptor's zero flag (bit 0). */
export const zeroFlag = (e: L2Entry): boolean => (e.lo & 1) !== 0;
/** The standard descriptor's host cluster offset (bits 9-55). */
export const standardOffset = (e: L2Entry): number => (e.hi & 0x00ffffff) * 0x1_0000_0000 + ((e.lo & 0xfffffe00) >>> 0);

/** True if reserved bits of a standard entry are set (bit 0 is reserved with extended L2 and in version 2). */
export function standardReserved(e: L2Entry, zeroBitAllowed: boolean): boolean {
  return (e.hi & 0x3f000000) !== 0 || (e.lo & (zeroBitAllowed ? 0x1fe : 0x1ff)) !== 0;
}

/** A compressed cluster: where its data starts and how many bytes to read (through the end of its last sector). */
export interface CompressedExtent {
  offset: number;
  length: number;
}

// compressed descriptor (x = 62 - (cluster_bits - 8)): bits 0..x-1 host offset | x..61 additional 512-byte sectors
/** Decodes a compressed descriptor. */
export function compressedExtent(e: L2Entry, clusterBits: number): CompressedExtent {
  const x = 62 - (clusterBits - 8);
  const hiOffsetBits = x - 32; // 17 (2 MiB clusters) .. 29 (512 B)
  const offset = (e.hi & ((1 << hiOffsetBits) - 1)) * 0x1_0000_0000 + (e.lo >>> 0);
  const sectors = ((e.hi >>> hiOffsetBits) & ((1 << (clusterBits - 8)) - 1)) + 1;
  return { offset, length: sectors * COMPRESSED_SECTOR - (offset % COMPRESSED_SECTOR) };
}

/** Encodes a compressed descriptor for `length` bytes of compressed data at `offset`. */
export function compressedEntry(offset: number, length: number, clusterBits: number): L2Entry {
  const x = 62 - (clusterBits - 8);
  const hiOffsetBits = x - 32;
  const sectors = Math.floor((offset + length - 1) / COMPRESSED_SECTOR) - Math.floor(offset / COMPRESSED_SECTOR);
  const hi = Math.floor(offset / 0x1_0000_0000) | (sectors << hiOffsetBits) | COMPRESSED;
  return { hi: hi >>> 0, lo: offset >>> 0, alloc: 0, zero: 0 };
}

/**
 * The type of subcluster `sub` (0 for standard entries) of entry `e`. Undefined for an
 * entry that breaks the format: both bits of a subcluster set, allocation bits without a
 * host cluster, a bitmap on a compressed cluster.
 */
export function subclusterType(e: L2Entry, sub: number, extended: boolean): ClusterType | undefined {
  if (isCompressed(e)) return extended && (e.alloc !== 0 || e.zero !== 0) ? undefined : ClusterType.COMPRESSED;
  const host = standardOffset(e) !== 0;
  if (!extended) {
    if (zeroFlag(e)) return host ? ClusterType.ZERO_ALLOC : ClusterType.ZERO_PLAIN;
    return host ? ClusterType.NORMAL : ClusterType.UNALLOCATED;
  }
  const bit = 1 << sub;
  const alloc = (e.alloc & bit) !== 0;
  const zero = (e.zero & bit) !== 0;
  if (alloc && zero) return undefined;
  if (!host && e.alloc !== 0) return undefined;
  if (zero) return host ? ClusterType.ZERO_ALLOC : ClusterType.ZERO_PLAIN;
  if (alloc) return ClusterType.NORMAL;
  return host ? ClusterType.UNALLOCATED_ALLOC : ClusterType.UNALLOCATED;
}

// ------------------------------------------------------------ refcount blocks

// refcount block: cluster_size * 8 / refcount_bits entries; sub-byte widths fill each
// byte from its least significant bit, 8/16/32/64-bit ones are big-endian
/** Refcount of entry `index` of a refcount block (a 64-bit refcount past 2^53 is inexact, and only compared). */
export function getRefcount(view: DataView, index: number, order: number): number {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const perByte = 8 / bits;
      return (view.getUint8(Math.floor(index / perByte)) >>> ((index % perByte) * bits)) & ((1 << bits) - 1);
    }
    case 3:
      return view.getUint8(index);
    case 4:
      return view.getUint16(index * 2);
    case 5:
      return view.getUint32(index * 4);
    default:
      return readU64(view, index * 8);
  }
}

/** Sets entry `index` of a refcount block; `value` must fit {@link maxRefcount}. */
export function setRefcount(view: DataView, index: number, order: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const perByte = 8 / bits;
      const at = Math.floor(index / perByte);
      const shift = (index % perByte) * bits;
      const mask = ((1 << bits) - 1) << shift;
      view.setUint8(at, (view.getUint8(at) & ~mask) | (value << shift));
      return;
    }
    case 3:
      view.setUint8(index, value);
      return;
    case 4:
      view.setUint16(index * 2, value);
      return;
    case 5:
      view.setUint32(index * 4, value);
      return;
    default:
      writeU64(view, index * 8, value);
  }
}

/** The largest refcount of a width (capped at 2^53 - 1 for 64-bit ones). */
export const maxRefcount = (order: number): number => (order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1);
