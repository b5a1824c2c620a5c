// Guest bytes to where they live: a range of the virtual disk becomes pieces of data
// in the file (host-contiguous runs merged), zeroes, compressed clusters, and ranges
// left to the backing file. Each L2 entry is checked as it is met: reserved bits,
// host offsets past the end of the file, and impossible subcluster states are EIO.
import { corrupt, hex } from './errors.js';
import {
  ClusterType,
  type CompressedExtent,
  compressedExtent,
  isCompressed,
  type L2Entry,
  readL2,
  standardOffset,
  standardReserved,
  subclusterType,
} from './layout.js';
import type { Metadata } from './metadata.js';
import type { Table } from './tables.js';

export const PieceKind = {
  /** Data in the file at `host`. */
  DATA: 0,
  /** Reads as zeroes, decided by this image (zero clusters). */
  ZERO: 1,
  /** Not allocated here: the backing file's, or zeroes without one. */
  BACKING: 2,
  /** Inside a compressed cluster (`compressed`); `host` unused. */
  COMPRESSED: 3,
} as const;
export type PieceKind = (typeof PieceKind)[keyof typeof PieceKind];

export interface Piece {
  kind: PieceKind;
  /** Guest offset. */
  offset: number;
  length: number;
  /** DATA: host offset of the first byte. */
  host: number;
  /** COMPRESSED: where the compressed cluster lies in the file. */
  compressed?: CompressedExtent;
}

/** One decoded entry (reused across lookups). */
const scratch: L2Entry = { hi: 0, lo: 0, alloc: 0, zero: 0 };

/** L2 tables a bounded lookup (extents) reads at most. */
const MAX_TABLES = 64;

/**
 * Maps `[offset, offset + length)`. With `maxPieces` (extents need only a bounded
 * answer) it stops once that many pieces are complete, or after a few dozen L2
 * tables; the last piece runs as far as it goes. Returns pieces contiguous from `offset`.
 */
export async function mapRange(m: Metadata, offset: number, length: number, maxPieces = Number.POSITIVE_INFINITY): Promise<Piece[]> {
  const out: Piece[] = [];
  const g = m.g;
  const end = offset + length;
  const bounded = maxPieces !== Number.POSITIVE_INFINITY;
  let tables = 0;
  let pos = offset;
  // One piece past the limit shows the last wanted one is complete; it is dropped.
  while (pos < end && out.length <= maxPieces && !(bounded && tables >= MAX_TABLES)) {
    const l1i = Math.floor(pos / g.l2Coverage);
    const tableEnd = Math.min(end, (l1i + 1) * g.l2Coverage);
    const off = m.l2Offset(l1i);
    if (off === 0) {
      push(out, PieceKind.BACKING, pos, tableEnd - pos, 0);
      pos = tableEnd;
      continue;
    }
    tables++;
    const t: Table = m.table(off) ?? (await m.l2.load(off)); // read only: a table evicted meanwhile still holds what the file does
    pos = mapInTable(m, t, pos, tableEnd, out, maxPieces + 1);
  }
  if (out.length > maxPieces) out.length = maxPieces;
  return out;
}

/** Maps `[pos, end)` inside one L2 table's coverage; returns where it stopped. */
function mapInTable(m: Metadata, t: Table, start: number, end: number, out: Piece[], maxPieces: number): number {
  const g = m.g;
  const C = g.clusterSize;
  const S = g.subclusterSize;
  let pos = start;
  while (pos < end && out.length < maxPieces) {
    const cluster = Math.floor(pos / C);
    const e = readL2(t.view, cluster % g.l2Entries, g.extendedL2, scratch);
    const clusterStart = cluster * C;
    const clusterEnd = Math.min(end, clusterStart + C);
    if (isCompressed(e)) {
      const ext = checkCompressed(m, e, clusterStart);
      out.push({ kind: PieceKind.COMPRESSED, offset: pos, length: clusterEnd - pos, host: 0, compressed: ext });
      pos = clusterEnd;
      continue;
    }
    if (standardReserved(e, g.header.version >= 3 && !g.extendedL2))
      throw corrupt(m.name, `L2 entry for guest offset ${hex(clusterStart)} has reserved bits set`);
    const host = standardOffset(e);
    if (host !== 0 && host >= m.io.length)
      throw corrupt(m.name, `guest offset ${hex(clusterStart)} maps to ${hex(host)}, past the end of the file (${m.io.length} bytes)`);
    while (pos < clusterEnd) {
      const sub = Math.floor((pos - clusterStart) / S);
      const subEnd = Math.min(clusterEnd, clusterStart + (sub + 1) * S);
      const type = subclusterType(e, sub, g.extendedL2);
      if (type === undefined) throw corrupt(m.name, `L2 entry for guest offset ${hex(clusterStart)} has an invalid subcluster bitmap`);
      const n = subEnd - pos;
      if (type === ClusterType.NORMAL) push(out, PieceKind.DATA, pos, n, host + (pos - clusterStart));
      else if (type === ClusterType.ZERO_PLAIN || type === ClusterType.ZERO_ALLOC) push(out, PieceKind.ZERO, pos, n, 0);
      else push(out, PieceKind.BACKING, pos, n, 0);
      pos = subEnd;
    }
  }
  return pos;
}

function checkCompressed(m: Metadata, e: L2Entry, guest: number): CompressedExtent {
  const g = m.g;
  if (g.extendedL2 && (e.alloc !== 0 || e.zero !== 0))
    throw corrupt(m.name, `compressed cluster at guest offset ${hex(guest)} has a subcluster bitmap`);
  if ((e.hi & 0x80000000) !== 0) throw corrupt(m.name, `compressed cluster at guest offset ${hex(guest)} has the COPIED flag`);
  const ext = compressedExtent(e, g.clusterBits);
  if (ext.offset >= m.io.length || ext.offset < g.clusterSize)
    throw corrupt(m.name, `compressed cluster at guest offset ${hex(guest)} points to ${hex(ext.offset)}, outside the file`);
  return ext;
}

/** Appends a piece, merging it into the last one when they continue each other. */
function push(out: Piece[], kind: PieceKind, offset: number, length: number, host: number): void {
  const last = out[out.length - 1];
  if (
    last !== undefined &&
    last.kind === kind &&
    kind !== PieceKind.COMPRESSED &&
    (kind !== PieceKind.DATA || last.host + last.length === host)
  ) {
    last.length += length;
    return;
  }
  out.push({ kind, offset, length, host });
}
