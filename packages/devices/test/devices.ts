// Devices for the filter tests (not exported by the package): a memory device that
// enforces block sizes and counts calls, so a test sees exactly what a filter sends down.

import type { BlockSizes } from '@nbd/protocol';
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device, DeviceExtent, ExtentsOptions, IoOptions, ZeroOptions } from '@nbd/server';
import { SparseMemoryDevice } from '../src/memory/sparse-memory-device.js';

export const io: IoOptions = { fua: false, signal: new AbortController().signal };
export const zio = (o: Partial<ZeroOptions> = {}): ZeroOptions => ({ ...io, noHole: false, fast: false, ...o });
export const eio = (reqOne = false): ExtentsOptions => ({ ...io, reqOne });

/** A sparse memory device that refuses requests breaking `blockSizes`, and records every call. */
export class StrictDevice implements Device {
  readonly mem: SparseMemoryDevice;
  readonly blockSizes: BlockSizes;
  readonly multiConn = true;
  readonly calls: { op: string; offset: number; length: number; fua?: boolean }[] = [];

  constructor(
    readonly size: number,
    min = 1,
    max = 0xffffffff,
  ) {
    this.mem = new SparseMemoryDevice(size);
    this.blockSizes = { min, preferred: Math.max(min, 4096), max };
  }

  private check(op: string, offset: number, length: number, data: boolean, o?: IoOptions): void {
    this.calls.push({ op, offset, length, fua: o?.fua });
    const { min, max } = this.blockSizes;
    if (offset % min !== 0 || length % min !== 0)
      throw new NbdErrnoError(Errno.EINVAL, `${op} ${offset}+${length} is not aligned to ${min}`);
    if (data && length > max) throw new NbdErrnoError(Errno.EINVAL, `${op} of ${length} is more than ${max}`);
    if (offset + length > this.size) throw new NbdErrnoError(Errno.EINVAL, `${op} ${offset}+${length} is beyond ${this.size}`);
  }

  readAt(buf: Uint8Array, offset: number, o: IoOptions): void {
    this.check('read', offset, buf.length, true, o);
    this.mem.readAt(buf, offset);
  }
  writeAt(buf: Uint8Array, offset: number, o: IoOptions): void {
    this.check('write', offset, buf.length, true, o);
    this.mem.writeAt(buf, offset);
  }
  sync(): void {
    this.calls.push({ op: 'sync', offset: 0, length: 0 });
  }
  trim(offset: number, length: number, o: IoOptions): void {
    this.check('trim', offset, length, false, o);
    this.mem.trim(offset, length);
  }
  zero(offset: number, length: number, o: ZeroOptions): void {
    this.check('zero', offset, length, false, o);
    this.mem.zero(offset, length, o);
  }
  cache(offset: number, length: number, o: IoOptions): void {
    this.check('cache', offset, length, false, o);
  }
  extents(offset: number, length: number, o: ExtentsOptions): DeviceExtent[] {
    this.check('extents', offset, length, false, o);
    return this.mem.extents(offset, length, o);
  }
  /** Bytes [offset, offset + length) as they are now. */
  bytes(offset: number, length: number): Uint8Array {
    const b = new Uint8Array(length);
    this.mem.readAt(b, offset);
    return b;
  }
}

/** Fills `b` with bytes derived from `seed` (distinct per call). */
export function fill(b: Uint8Array, seed: number): Uint8Array {
  for (let i = 0; i < b.length; i++) b[i] = (seed * 31 + i * 7 + 1) & 0xff || 1;
  return b;
}

/** Reads a whole device, in requests no longer than its maximum payload. */
export async function readAll(dev: Device, size = dev.size!): Promise<Uint8Array> {
  const b = new Uint8Array(size);
  const max = Math.min(dev.blockSizes?.max ?? 1 << 20, 1 << 20);
  for (let at = 0; at < size; at += max) await dev.readAt(b.subarray(at, Math.min(size, at + max)), at, io);
  return b;
}
