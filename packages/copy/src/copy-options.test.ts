// copy()'s nbdcopy options that change what reaches the destination (allocated,
// extents). Block devices are FileDevice's (@nbd/devices), tested there.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllocationState } from '@nbd/protocol';
import { type Device, listen, MemoryDevice } from '@nbd/server';
import { afterEach, describe, expect, test } from 'vitest';
import { copy } from './copy.js';

let cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'nbd-copy-opts-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Serves `device` on a unix socket for the test; returns its URI. */
async function serveDevice(device: Device, size: number): Promise<string> {
  const sock = join(tmp(), 's');
  const server = await listen({ path: sock }, [{ name: '', size, device }]);
  cleanups.push(() => server.close());
  return `nbd+unix:///?socket=${sock}`;
}

/** A memory device that records zero() calls and counts extents() calls. */
function recording(size: number) {
  const mem = new MemoryDevice(size);
  const zeroes: { offset: number; length: number; noHole: boolean }[] = [];
  let extentCalls = 0;
  const device: Device = {
    size,
    multiConn: true,
    readAt: (b, o) => mem.readAt(b, o),
    writeAt: (b, o) => mem.writeAt(b, o),
    zero: (offset, length, opts) => {
      zeroes.push({ offset, length, noHole: opts.noHole });
      return mem.zero(offset, length, opts);
    },
    extents: (offset, length) => {
      extentCalls++;
      return [{ length, flags: offset === 0 ? 0 : AllocationState.HOLE | AllocationState.ZERO }];
    },
  };
  return { device, zeroes, extentCalls: () => extentCalls };
}

describe('copy: allocated', () => {
  test('zero ranges are written into a new file instead of left as holes', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    writeFileSync(src, Buffer.alloc(4 << 20));
    await copy(src, join(dir, 'sparse'));
    await copy(src, join(dir, 'full'), { allocated: true });
    expect(statSync(join(dir, 'sparse')).blocks * 512).toBeLessThan(1 << 20);
    expect(statSync(join(dir, 'full')).blocks * 512).toBeGreaterThanOrEqual(4 << 20);
    expect(readFileSync(join(dir, 'full')).equals(Buffer.alloc(4 << 20))).toBe(true);
  });

  test('an NBD destination gets WRITE_ZEROES with NO_HOLE only when allocated', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    writeFileSync(src, Buffer.alloc(1 << 20));
    const plain = recording(1 << 20);
    await copy(src, await serveDevice(plain.device, 1 << 20), { connections: 1 });
    expect(plain.zeroes.length).toBeGreaterThan(0);
    expect(plain.zeroes.every((z) => !z.noHole)).toBe(true);
    const full = recording(1 << 20);
    await copy(src, await serveDevice(full.device, 1 << 20), { connections: 1, allocated: true });
    expect(full.zeroes.length).toBeGreaterThan(0);
    expect(full.zeroes.every((z) => z.noHole)).toBe(true);
  });

  test('destinationIsZero still skips zero ranges, allocated or not', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    writeFileSync(src, Buffer.alloc(1 << 20));
    const r = recording(1 << 20);
    await copy(src, await serveDevice(r.device, 1 << 20), { connections: 1, allocated: true, destinationIsZero: true });
    expect(r.zeroes).toEqual([]);
  });
});

describe('copy: extents', () => {
  test('extents: false never asks the source for block status, and still copies the bytes', async () => {
    const size = 2 << 20;
    const src = recording(size);
    const data = Buffer.alloc(size);
    data.fill(9, 0, 4096);
    await src.device.writeAt!(data, 0, { fua: false, signal: new AbortController().signal });
    const uri = await serveDevice(src.device, size);
    const dir = tmp();
    // Requests under 64 KiB: the server asks the device for extents only for BLOCK_STATUS then (not for sparse READ replies).
    const requestSize = 32 * 1024;
    await copy(uri, join(dir, 'with'), { connections: 1, requestSize });
    expect(src.extentCalls()).toBeGreaterThan(0);
    const before = src.extentCalls();
    const r = await copy(uri, join(dir, 'without'), { connections: 1, requestSize, extents: false });
    expect(src.extentCalls()).toBe(before);
    expect(r.zeroBytes).toBe(size - 4096); // found by reading, in 4 KiB blocks: all but the first are zero
    expect(readFileSync(join(dir, 'without')).equals(data)).toBe(true);
  });

  test('sparseSize: zero runs looked for in blocks of that size; 0 looks for none', async () => {
    const size = 2 << 20;
    const src = recording(size);
    const data = Buffer.alloc(size);
    data.fill(9, 0, 4096);
    await src.device.writeAt!(data, 0, { fua: false, signal: new AbortController().signal });
    const uri = await serveDevice(src.device, size);
    const dir = tmp();
    const opts = { connections: 1, requestSize: 64 * 1024, extents: false };
    expect((await copy(uri, join(dir, 'a'), { ...opts, sparseSize: 64 * 1024 })).zeroBytes).toBe(size - 64 * 1024);
    expect((await copy(uri, join(dir, 'b'), { ...opts, sparseSize: 512 })).zeroBytes).toBe(size - 4096);
    expect((await copy(uri, join(dir, 'c'), { ...opts, sparseSize: 0 })).zeroBytes).toBe(0);
    for (const f of ['a', 'b', 'c']) expect(readFileSync(join(dir, f)).equals(data)).toBe(true);
    await expect(copy(uri, 'null:', { sparseSize: 1000 })).rejects.toThrow(/sparseSize must be 0 or a power of two of at least 512/);
    // 2^32 + 512 passed a 32-bit bitwise test of a power of two (its low bits are 512's).
    await expect(copy(uri, 'null:', { sparseSize: 2 ** 32 + 512 })).rejects.toThrow(/sparseSize must be 0 or a power of two/);
    await expect(copy(uri, 'null:', { queueSize: 0 })).rejects.toThrow(/queueSize must be a positive integer/);
  });
});
