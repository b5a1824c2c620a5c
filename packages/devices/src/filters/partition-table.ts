// Partition tables, read through a callback (no I/O of their own): MBR with its
// primary entries and the logical partitions of an extended partition's EBR chain
// (numbered from 5, as Linux and nbdkit number them), and GPT (its entry N is
// partition N). Sizes a table claims are bounded before anything is read.
import { NbdInvalidArgumentError } from '@nbd/protocol';

/** A partition: where it lies on the disk, in bytes. */
export interface Partition {
  /** Its number: MBR 1–4 primary, 5… logical; GPT the entry index + 1. */
  number: number;
  start: number;
  length: number;
  /** MBR: the type byte as hex ("83"); GPT: the type GUID. */
  type: string;
}

/** Reads `length` bytes at `offset` of the disk. */
export type ReadBytes = (offset: number, length: number) => Promise<Uint8Array>;

const MBR_SECTOR = 512;
const EXTENDED = new Set([0x05, 0x0f, 0x85]);
const GPT_PROTECTIVE = 0xee;
const MAX_LOGICAL = 128;
const MAX_GPT_ENTRIES = 1024;

const fail = (why: string): never => {
  throw new NbdInvalidArgumentError(`partition table: ${why}`);
};

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** The four 16-byte entries at 0x1be of an MBR or EBR sector: [type, first sector, sector count]. */
function mbrEntries(sector: Uint8Array, at?: number): [number, number, number][] {
  const dv = view(sector);
  if (dv.getUint16(510, true) !== 0xaa55) {
    if (at === undefined)
      throw new NbdInvalidArgumentError('the disk has no partition table (no MBR boot signature 0x55 0xaa at byte 510)');
    fail(`the EBR at byte ${at} has no boot signature (0x55 0xaa at its byte 510)`);
  }
  const out: [number, number, number][] = [];
  for (let i = 0; i < 4; i++) {
    const e = 0x1be + 16 * i;
    out.push([sector[e + 4]!, dv.getUint32(e + 8, true), dv.getUint32(e + 12, true)]);
  }
  return out;
}

/** Every partition of the disk, by number. */
export async function readPartitions(read: ReadBytes, diskSize: number): Promise<Partition[]> {
  const mbr = await read(0, MBR_SECTOR);
  const entries = mbrEntries(mbr);
  if (entries.some(([type]) => type === GPT_PROTECTIVE)) return readGpt(read, diskSize);
  const out: Partition[] = [];
  for (let i = 0; i < 4; i++) {
    const [type, first, count] = entries[i]!;
    if (type === 0 || count === 0) continue;
    out.push({ number: i + 1, start: first * MBR_SECTOR, length: count * MBR_SECTOR, type: type.toString(16).padStart(2, '0') });
    if (EXTENDED.has(type)) out.push(...(await readLogical(read, first * MBR_SECTOR)));
  }
  return out;
}

/** The EBR chain of an extended partition starting at `extStart`: logical partitions 5, 6, … */
async function readLogical(read: ReadBytes, extStart: number): Promise<Partition[]> {
  const out: Partition[] = [];
  const seen = new Set<number>();
  for (let ebr = extStart; out.length < MAX_LOGICAL; ) {
    if (seen.has(ebr)) fail(`the EBR chain loops at byte ${ebr}`);
    seen.add(ebr);
    const [logical, next] = mbrEntries(await read(ebr, MBR_SECTOR), ebr);
    const [type, first, count] = logical!;
    if (type !== 0 && count !== 0)
      out.push({
        number: 5 + out.length,
        start: ebr + first * MBR_SECTOR,
        length: count * MBR_SECTOR,
        type: type.toString(16).padStart(2, '0'),
      });
    const [nextType, nextFirst] = next!;
    if (nextType === 0 || nextFirst === 0) break;
    ebr = extStart + nextFirst * MBR_SECTOR;
  }
  return out;
}

function guid(b: Uint8Array): string {
  const h = (from: number, to: number, le: boolean) => {
    const bytes = [...b.subarray(from, to)];
    return (le ? bytes.reverse() : bytes).map((x) => x.toString(16).padStart(2, '0')).join('');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

/** GPT: the header at LBA 1 (512-byte sectors, else 4096), then its entry array. */
async function readGpt(read: ReadBytes, diskSize: number): Promise<Partition[]> {
  for (const sector of [512, 4096]) {
    if (diskSize < 2 * sector) continue;
    const header = await read(sector, sector);
    if (new TextDecoder().decode(header.subarray(0, 8)) !== 'EFI PART') continue;
    const dv = view(header);
    const entriesAt = Number(dv.getBigUint64(72, true)) * sector;
    const count = dv.getUint32(80, true);
    const entrySize = dv.getUint32(84, true);
    if (count > MAX_GPT_ENTRIES || entrySize < 128 || entrySize > 4096 || entrySize % 8 !== 0)
      fail(`GPT header claims ${count} entries of ${entrySize} bytes`);
    if (entriesAt + count * entrySize > diskSize) fail('GPT entries lie beyond the end of the disk');
    const table = await read(entriesAt, count * entrySize);
    const out: Partition[] = [];
    for (let i = 0; i < count; i++) {
      const e = table.subarray(i * entrySize, (i + 1) * entrySize);
      if (e.subarray(0, 16).every((x) => x === 0)) continue;
      const ev = view(e);
      const first = Number(ev.getBigUint64(32, true));
      const last = Number(ev.getBigUint64(40, true));
      if (last < first) fail(`GPT entry ${i + 1} ends before it starts`);
      out.push({ number: i + 1, start: first * sector, length: (last - first + 1) * sector, type: guid(e) });
    }
    return out;
  }
  return fail('protective MBR but no GPT header ("EFI PART") at LBA 1');
}
