// nbdkit's partition filter (qemu-nbd -P): one partition of an MBR or GPT disk,
// served as a device of its own. The table is read once, when the filter is built.
import { throwIfAborted } from '@nbd/protocol';
import type { Device, IoOptions } from '@nbd/server';
import { limitsOf, sizeOf, stackError } from './layer.js';
import { window } from './offset.js';
import { type Partition, readPartitions } from './partition-table.js';

/** Reads `length` bytes at `offset` of `base`, through reads aligned to its minimum block size. */
export async function readAligned(base: Device, offset: number, length: number, signal: AbortSignal): Promise<Uint8Array> {
  const { min } = limitsOf(base);
  const start = offset - (offset % min);
  const end = Math.min(Math.ceil((offset + length) / min) * min, sizeOf(base, 'partition'));
  const buf = new Uint8Array(Math.max(0, end - start));
  const opts: IoOptions = { fua: false, signal };
  await base.readAt(buf, start, opts);
  const out = buf.subarray(offset - start, offset - start + length);
  if (out.length < length) throw stackError('partition', `the partition table reaches past the end of the disk (byte ${offset + length})`);
  return out;
}

/** Options of {@link partition} and {@link partitionsOf}. */
export interface PartitionOptions {
  /** Aborts reading the table. */
  signal?: AbortSignal;
}

/** The partitions of `base`'s table (MBR or GPT). */
export function partitionsOf(base: Device, opts: PartitionOptions = {}): Promise<Partition[]> {
  const size = sizeOf(base, 'partition');
  const signal = opts.signal ?? new AbortController().signal;
  return readPartitions(async (offset, length) => {
    throwIfAborted(signal, 'reading the partition table');
    return readAligned(base, offset, length, signal);
  }, size);
}

/** Partition `number` (from 1) of `base`; fails when the table has no such partition or it lies beyond the disk. */
export async function partition(base: Device, number: number, opts: PartitionOptions = {}): Promise<Device> {
  if (!Number.isSafeInteger(number) || number < 1) throw stackError('partition', `partition number ${number} must be 1 or more`);
  const size = sizeOf(base, 'partition');
  const parts = await partitionsOf(base, opts);
  const p = parts.find((x) => x.number === number);
  if (p === undefined) {
    const have = parts.map((x) => x.number).join(', ') || 'none';
    throw stackError('partition', `partition ${number} does not exist (partitions: ${have})`);
  }
  if (p.start + p.length > size)
    throw stackError('partition', `partition ${number} (${p.start}+${p.length}) lies beyond the end of the disk (${size} bytes)`);
  return window(base, 'partition', { offset: p.start, range: p.length }, { partition: number });
}
