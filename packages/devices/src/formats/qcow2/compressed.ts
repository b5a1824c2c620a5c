// Compressed clusters: raw deflate (zlib without a header, as qemu writes it) or one
// zstd frame, inflated to exactly one cluster. The input runs to the end of the last
// 512-byte sector, so it may carry the start of the next compressed cluster: deflate
// stops at its end block; for zstd the frame's own length is walked first (Node 26's
// decoder ignores what follows a frame, 22's and 24's refuse it). Output is capped at
// the cluster size, so a hostile stream cannot allocate more.
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { corrupt } from './errors.js';

const inflateRaw = promisify(zlib.inflateRaw);
type Decompress = (buf: Uint8Array, opts: { maxOutputLength: number }) => Promise<Buffer>;
/** Node ≥ 22.15 and ≥ 23.8 have zstd in node:zlib. */
const zstdDecompress: Decompress | undefined =
  typeof (zlib as { zstdDecompress?: unknown }).zstdDecompress === 'function'
    ? (promisify((zlib as unknown as { zstdDecompress: (...a: unknown[]) => void }).zstdDecompress) as Decompress)
    : undefined;

/** True if this Node can read zstd-compressed clusters. */
export const hasZstd = zstdDecompress !== undefined;

/** Inflates compressed cluster data into `out` (one cluster). */
export async function decompressCluster(kind: 'zlib' | 'zstd', input: Uint8Array, out: Uint8Array, image: string): Promise<void> {
  let result: Uint8Array;
  try {
    if (kind === 'zlib') {
      result = await inflateRaw(input, { maxOutputLength: out.length, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    } else {
      if (zstdDecompress === undefined) throw new Error(`zstd needs Node.js ≥ 22.15 (this is ${process.version})`);
      const frame = zstdFrameLength(input);
      if (frame === undefined) throw new Error('not a complete zstd frame');
      result = await zstdDecompress(input.subarray(0, frame), { maxOutputLength: out.length });
    }
  } catch (e) {
    throw corrupt(image, `a compressed cluster does not decompress (${kind}): ${(e as Error).message}`, e);
  }
  if (result.length !== out.length) throw corrupt(image, `a compressed cluster decompresses to ${result.length} bytes, not ${out.length}`);
  out.set(result);
}

// zstd frame: u32le magic 0xFD2FB528 | u8 descriptor | [u8 window] | dictionary id (0/1/2/4) | content size (0/1/2/4/8)
// | blocks: u24le header (bit 0 last, bits 1-2 type, bits 3-23 size) + payload (1 byte for RLE) | [u32 checksum]
/** Bytes in the zstd frame at the start of `buf`, or undefined if it is cut short or not a frame. */
export function zstdFrameLength(buf: Uint8Array): number | undefined {
  if (buf.length < 6 || buf[0] !== 0x28 || buf[1] !== 0xb5 || buf[2] !== 0x2f || buf[3] !== 0xfd) return undefined;
  const fd = buf[4]!;
  const singleSegment = (fd & 0x20) !== 0;
  const checksum = (fd & 0x04) !== 0;
  const dictBytes = [0, 1, 2, 4][fd & 3]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fd >> 6]!;
  let at = 5 + (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
  for (;;) {
    if (at + 3 > buf.length) return undefined;
    const header = buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16);
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) return undefined; // reserved block type
    at += 3 + (type === 1 ? 1 : size);
    if (at > buf.length) return undefined;
    if ((header & 1) !== 0) break;
  }
  at += checksum ? 4 : 0;
  return at <= buf.length ? at : undefined;
}
