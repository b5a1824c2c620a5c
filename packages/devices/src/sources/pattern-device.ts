// nbdkit's pattern plugin: a read-only device where each 8-byte word holds its own
// offset as a big-endian 64-bit integer (word 0x28 reads 00 00 00 00 00 00 00 28).
import type { Device, DeviceRecipe } from '@nbd/server';
import { checkSize } from './null-device.js';
import { sourceRecipe } from './source-recipe.js';

/** Writes the pattern for `[offset, offset + buf.length)` into `buf`. */
export function fillPattern(buf: Uint8Array, offset: number): void {
  const first = offset - (offset % 8);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const word = new Uint8Array(8);
  const wv = new DataView(word.buffer);
  let pos = 0;
  // Unaligned head: the tail of the word that holds `offset`.
  if (first !== offset) {
    wv.setUint32(0, Math.floor(first / 0x100000000));
    wv.setUint32(4, first >>> 0);
    const skip = offset - first;
    const n = Math.min(8 - skip, buf.length);
    buf.set(word.subarray(skip, skip + n), 0);
    pos = n;
  }
  for (; pos + 8 <= buf.length; pos += 8) {
    const w = offset + pos;
    dv.setUint32(pos, Math.floor(w / 0x100000000));
    dv.setUint32(pos + 4, w >>> 0);
  }
  // Unaligned tail: the head of the last word.
  if (pos < buf.length) {
    const w = offset + pos;
    wv.setUint32(0, Math.floor(w / 0x100000000));
    wv.setUint32(4, w >>> 0);
    buf.set(word.subarray(0, buf.length - pos), pos);
  }
}

/** nbdkit's pattern plugin (read-only). */
export class PatternDevice implements Device {
  readonly size: number;
  readonly readOnly = true;
  readonly multiConn = true;

  constructor(size: number) {
    this.size = checkSize(size, 'PatternDevice');
  }

  readAt(buf: Uint8Array, offset: number): void {
    fillPattern(buf, offset);
  }

  /** Nothing to prefetch: the data is computed. */
  cache(): void {}

  share(): DeviceRecipe {
    return sourceRecipe({ kind: 'pattern', size: this.size });
  }
}
