// Whole reads and writes over FileHandle's positional I/O (libuv's thread pool),
// looping over short transfers.
import type { FileHandle } from 'node:fs/promises';
import { Errno, NbdErrnoError, zeroChunk } from '@nbd/protocol';
import { alignedBuffer } from './aligned.js';

/** Fills `buf` from `offset`; what lies past the end of the file reads as zeroes. */
export async function readFully(fh: FileHandle, buf: Uint8Array, offset: number): Promise<void> {
  for (let pos = 0; pos < buf.length; ) {
    const { bytesRead } = await fh.read(buf, pos, buf.length - pos, offset + pos);
    if (bytesRead === 0) {
      // A file shorter than the export (a size given larger, or truncated under us).
      buf.fill(0, pos);
      return;
    }
    pos += bytesRead;
  }
}

/** Writes all of `buf` at `offset`. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, offset: number): Promise<void> {
  for (let pos = 0; pos < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, pos, buf.length - pos, offset + pos);
    if (bytesWritten === 0) throw new NbdErrnoError(Errno.ENOSPC, `short write at ${offset + pos}`);
    pos += bytesWritten;
  }
}

const ALIGNED_ZEROES = 1024 * 1024;
let alignedZeroes: Uint8Array | undefined;

/** 1 MiB of zeroes, never written to; page-aligned when asked (O_DIRECT writes it as it is). */
export function zeroBuffer(aligned: boolean): Uint8Array {
  if (!aligned) return zeroChunk();
  alignedZeroes ??= alignedBuffer(ALIGNED_ZEROES);
  return alignedZeroes;
}
