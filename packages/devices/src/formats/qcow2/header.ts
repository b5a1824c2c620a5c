// Opening a qcow2 image: the header and its extensions are read and every field is
// checked before anything else is, as qemu's qcow2_do_open does, and then some: each
// table must lie inside the file (qemu only checks alignment and overflow), so a
// hostile image is refused here with one clear message instead of a read outside the
// file, a huge allocation or a hang later.
import { bytes, corrupt, hex, unsupported } from './errors.js';
import type { HostIo } from './host-io.js';
import {
  Autoclear,
  CompressionType,
  CryptMethod,
  decodeExtensions,
  decodeFeatureNames,
  decodeHeader,
  Extension,
  HEADER_V2_LENGTH,
  HEADER_V3_LENGTH,
  HEADER_V3_MIN_LENGTH,
  Incompatible,
  KNOWN_INCOMPATIBLE,
  l2EntryBytes,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_EXTENDED_CLUSTER_BITS,
  type QcowHeader,
  SUBCLUSTERS,
} from './layout.js';

/** What the header says, checked, with the sizes derived from it. */
export interface ImageGeometry {
  header: QcowHeader;
  clusterBits: number;
  clusterSize: number;
  extendedL2: boolean;
  /** Entries per L2 table. */
  l2Entries: number;
  /** Guest bytes one L2 table maps. */
  l2Coverage: number;
  /** Cluster size, or cluster size / 32 with extended L2. */
  subclusterSize: number;
  refcountOrder: number;
  /** Refcounts per refcount block. */
  refblockEntries: number;
  compression: 'zlib' | 'zstd';
  backingName: string | undefined;
  backingFormat: string | undefined;
  /** Why this image must not be written (dirty, corrupt, snapshots, bitmaps); empty if it may be. */
  readOnlyReasons: string[];
  /** Autoclear bits to clear before the first write (unknown to us). */
  clearAutoclear: bigint;
}

/** A contiguous range of the file holding metadata, for overlap checks. */
export interface FileRange {
  what: string;
  offset: number;
  length: number;
}

/** Reads and checks the header of `name` (`file.length` is the file's size). */
export async function readGeometry(file: HostIo, name: string): Promise<ImageGeometry> {
  const fileSize = file.length;
  if (fileSize < HEADER_V2_LENGTH)
    throw corrupt(name, `truncated header: the file is ${bytes(fileSize)}, a header needs ${HEADER_V2_LENGTH}`);
  const first = new Uint8Array(Math.min(fileSize, HEADER_V3_LENGTH));
  await file.read(first, 0);
  const h = decodeHeader(first);
  if (h === undefined) throw corrupt(name, 'not a qcow2 image (no QFI\\xfb magic)');
  if (h.version !== 2 && h.version !== 3) throw unsupported(name, `qcow2 version ${h.version} (only 2 and 3 exist)`);
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS)
    throw corrupt(name, `cluster_bits ${h.clusterBits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS} (512 B to 2 MiB clusters)`);
  const clusterSize = 2 ** h.clusterBits;
  if (h.version === 3) {
    if (h.headerLength < HEADER_V3_MIN_LENGTH || h.headerLength % 8 !== 0 || h.headerLength > clusterSize)
      throw corrupt(name, `header_length ${h.headerLength} is not a multiple of 8 between ${HEADER_V3_MIN_LENGTH} and the cluster size`);
    if (fileSize < h.headerLength)
      throw corrupt(name, `truncated header: the file is ${bytes(fileSize)}, header_length says ${h.headerLength}`);
  }
  checkFeatures(h, name, await featureNames(file, h, clusterSize));
  const extendedL2 = (h.incompatible & Incompatible.EXTENDED_L2) !== 0n;
  if (extendedL2 && h.clusterBits < MIN_EXTENDED_CLUSTER_BITS)
    throw corrupt(name, `extended L2 entries need clusters of at least 16 KiB, not ${bytes(clusterSize)}`);
  if (h.refcountOrder > 6) throw corrupt(name, `refcount_order ${h.refcountOrder} is larger than 6 (64-bit refcounts)`);
  if (!Number.isSafeInteger(h.size)) throw unsupported(name, `virtual size ${h.size} is larger than 2^53 bytes`);
  const l2Entries = clusterSize / l2EntryBytes(extendedL2);
  const l2Coverage = l2Entries * clusterSize;
  checkTables(h, name, clusterSize, l2Coverage, fileSize);
  const { backingName, backingFormat } = await backingOf(file, h, name, clusterSize, fileSize);
  const readOnlyReasons: string[] = [];
  if ((h.incompatible & Incompatible.DIRTY) !== 0n)
    readOnlyReasons.push('its dirty bit is set (lazy refcounts not yet repaired: run qemu-img check -r all)');
  if ((h.incompatible & Incompatible.CORRUPT) !== 0n) readOnlyReasons.push('qemu marked it corrupt (run qemu-img check -r all)');
  if (h.nbSnapshots > 0) readOnlyReasons.push(`it has ${h.nbSnapshots} internal snapshot(s) (writing them is not implemented)`);
  if ((h.autoclear & Autoclear.BITMAPS) !== 0n) readOnlyReasons.push('it has persistent dirty bitmaps (writing would leave them stale)');
  return {
    header: h,
    clusterBits: h.clusterBits,
    clusterSize,
    extendedL2,
    l2Entries,
    l2Coverage,
    subclusterSize: extendedL2 ? clusterSize / SUBCLUSTERS : clusterSize,
    refcountOrder: h.refcountOrder,
    refblockEntries: (clusterSize * 8) / 2 ** h.refcountOrder,
    compression: h.compressionType === CompressionType.ZSTD ? 'zstd' : 'zlib',
    backingName,
    backingFormat,
    readOnlyReasons,
    clearAutoclear: h.autoclear & ~(Autoclear.BITMAPS | Autoclear.RAW_EXTERNAL),
  };
}

/** The metadata ranges named by the header, checked not to overlap one another. */
export function headerRanges(g: ImageGeometry): FileRange[] {
  const h = g.header;
  const ranges: FileRange[] = [{ what: 'the header', offset: 0, length: g.clusterSize }];
  if (h.l1Size > 0) ranges.push({ what: 'the L1 table', offset: h.l1TableOffset, length: h.l1Size * 8 });
  ranges.push({ what: 'the refcount table', offset: h.refcountTableOffset, length: h.refcountTableClusters * g.clusterSize });
  // The snapshot table's length depends on its entries; its first cluster is enough to catch overlaps.
  if (h.nbSnapshots > 0) ranges.push({ what: 'the snapshot table', offset: h.snapshotsOffset, length: g.clusterSize });
  return ranges;
}

/** Throws if two of `ranges` share a cluster. */
export function checkNoOverlap(ranges: FileRange[], clusterSize: number, name: string): void {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    const aEnd = Math.ceil((a.offset + a.length) / clusterSize) * clusterSize;
    if (b.offset < aEnd) throw corrupt(name, `${b.what} (at ${hex(b.offset)}) overlaps ${a.what} (at ${hex(a.offset)})`);
  }
}

function checkFeatures(h: QcowHeader, name: string, names: Map<string, string>): void {
  if (h.cryptMethod !== CryptMethod.NONE) {
    const kind = h.cryptMethod === CryptMethod.AES ? 'AES' : h.cryptMethod === CryptMethod.LUKS ? 'LUKS' : `method ${h.cryptMethod}`;
    throw unsupported(name, `the image is encrypted (${kind}); decrypt it first (qemu-img convert --object secret,... -O qcow2)`);
  }
  const unknown = h.incompatible & ~KNOWN_INCOMPATIBLE;
  if (unknown !== 0n) {
    const bits: string[] = [];
    for (let b = 0n; b < 64n; b++) if ((unknown >> b) & 1n) bits.push(names.get(`0:${b}`) ?? `bit ${b}`);
    throw unsupported(name, `unknown incompatible feature(s): ${bits.join(', ')}`);
  }
  if ((h.incompatible & Incompatible.DATA_FILE) !== 0n) throw unsupported(name, 'an external data file (data_file=) is not supported');
  const compressionBit = (h.incompatible & Incompatible.COMPRESSION_TYPE) !== 0n;
  if (h.compressionType !== CompressionType.ZLIB && h.compressionType !== CompressionType.ZSTD)
    throw unsupported(name, `compression type ${h.compressionType} (only 0 zlib and 1 zstd exist)`);
  if (compressionBit !== (h.compressionType !== CompressionType.ZLIB))
    throw corrupt(name, `compression type ${h.compressionType} does not match the compression type feature bit`);
  if (h.version === 2 && h.headerLength !== HEADER_V2_LENGTH) throw corrupt(name, 'bad version 2 header length');
}

function checkTables(h: QcowHeader, name: string, clusterSize: number, l2Coverage: number, fileSize: number): void {
  const aligned = (n: number) => n % clusterSize === 0;
  const inFile = (offset: number, length: number) => Number.isSafeInteger(offset) && offset + length <= fileSize;
  // L1: large enough for the virtual size, within qemu's 32 MiB, inside the file.
  const needed = Math.ceil(h.size / l2Coverage);
  if (h.l1Size < needed) throw corrupt(name, `the L1 table has ${h.l1Size} entries, the virtual size ${bytes(h.size)} needs ${needed}`);
  if (h.l1Size * 8 > MAX_L1_BYTES) throw corrupt(name, `the L1 table is ${bytes(h.l1Size * 8)}, more than qemu's limit of 32 MiB`);
  if (h.l1Size > 0) {
    if (!aligned(h.l1TableOffset) || h.l1TableOffset === 0) throw corrupt(name, `the L1 table offset ${hex(h.l1TableOffset)} is invalid`);
    if (!inFile(h.l1TableOffset, h.l1Size * 8))
      throw corrupt(
        name,
        `the L1 table (${bytes(h.l1Size * 8)} at ${hex(h.l1TableOffset)}) lies beyond the end of the file (${bytes(fileSize)})`,
      );
  }
  // Refcount table: at least one cluster, within qemu's 8 MiB, inside the file.
  const reftableBytes = h.refcountTableClusters * clusterSize;
  if (h.refcountTableClusters === 0) throw corrupt(name, 'the refcount table is empty');
  if (reftableBytes > MAX_REFTABLE_BYTES)
    throw corrupt(name, `the refcount table is ${bytes(reftableBytes)}, more than qemu's limit of 8 MiB`);
  if (!aligned(h.refcountTableOffset) || h.refcountTableOffset === 0)
    throw corrupt(name, `the refcount table offset ${hex(h.refcountTableOffset)} is invalid`);
  if (!inFile(h.refcountTableOffset, reftableBytes))
    throw corrupt(
      name,
      `the refcount table (${bytes(reftableBytes)} at ${hex(h.refcountTableOffset)}) lies beyond the end of the file (${bytes(fileSize)})`,
    );
  if (h.nbSnapshots > MAX_SNAPSHOTS) throw corrupt(name, `${h.nbSnapshots} snapshots, more than qemu's limit of ${MAX_SNAPSHOTS}`);
  if (h.nbSnapshots > 0 && (!aligned(h.snapshotsOffset) || !inFile(h.snapshotsOffset, 40)))
    throw corrupt(name, `the snapshot table offset ${hex(h.snapshotsOffset)} is invalid or beyond the end of the file`);
}

/** The feature name table, keyed `type:bit`, to name unknown incompatible bits. */
async function featureNames(file: HostIo, h: QcowHeader, clusterSize: number): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  if (h.version < 3) return names;
  try {
    for (const e of await extensions(file, h, clusterSize)) {
      if (e.type !== Extension.FEATURE_NAMES) continue;
      for (const f of decodeFeatureNames(e.data)) names.set(`${f.type}:${f.bit}`, `bit ${f.bit} "${f.name}"`);
    }
  } catch {
    // A broken extension area is reported by backingOf; here names are only a nicety.
  }
  return names;
}

/** The extension area: from the end of the header to the backing file name (or the end of the first cluster). */
async function extensions(file: HostIo, h: QcowHeader, clusterSize: number) {
  const start = h.headerLength;
  const backingStart = h.backingFileOffset > 0 && h.backingFileOffset < clusterSize ? h.backingFileOffset : clusterSize;
  const end = Math.min(backingStart, clusterSize, file.length);
  if (end <= start) return [];
  const area = new Uint8Array(end - start);
  await file.read(area, start);
  return decodeExtensions(area);
}

async function backingOf(file: HostIo, h: QcowHeader, name: string, clusterSize: number, fileSize: number) {
  let backingFormat: string | undefined;
  let exts: Awaited<ReturnType<typeof extensions>>;
  try {
    exts = await extensions(file, h, clusterSize);
  } catch (e) {
    throw corrupt(name, (e as Error).message);
  }
  const seen = new Set<number>();
  for (const e of exts) {
    if (seen.has(e.type) && e.type !== Extension.FEATURE_NAMES) throw corrupt(name, `header extension ${hex(e.type)} appears twice`);
    seen.add(e.type);
    if (e.type === Extension.BACKING_FORMAT) backingFormat = new TextDecoder().decode(e.data);
    if (e.type === Extension.ENCRYPTION) throw corrupt(name, 'an encryption header extension without encryption');
    if (e.type === Extension.DATA_FILE) throw unsupported(name, 'an external data file (data_file=) is not supported');
  }
  if ((h.autoclear & Autoclear.BITMAPS) !== 0n && !seen.has(Extension.BITMAPS))
    throw corrupt(name, 'the bitmaps feature bit is set without a bitmaps extension');
  if (h.backingFileOffset === 0) return { backingName: undefined, backingFormat };
  const size = h.backingFileSize;
  if (size === 0 || size > MAX_BACKING_NAME) throw corrupt(name, `backing file name length ${size} is outside 1..${MAX_BACKING_NAME}`);
  if (h.backingFileOffset < h.headerLength || h.backingFileOffset + size > clusterSize || h.backingFileOffset + size > fileSize)
    throw corrupt(name, `the backing file name (${size} bytes at ${hex(h.backingFileOffset)}) is outside the first cluster or the file`);
  const raw = new Uint8Array(size);
  await file.read(raw, h.backingFileOffset);
  let backingName: string;
  try {
    backingName = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch (e) {
    throw corrupt(name, 'the backing file name is not UTF-8', e);
  }
  if (backingName.includes('\0')) throw corrupt(name, 'the backing file name contains a NUL byte');
  return { backingName, backingFormat };
}
