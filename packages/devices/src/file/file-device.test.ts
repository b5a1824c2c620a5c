import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, NbdAbortError, NbdErrnoError, NbdInvalidArgumentError } from '@nbd/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { eio, fill, io, zio } from '../../test/devices.js';
import { isAlignedMemory } from './aligned.js';
import { FileDevice, openDevice } from './file-device.js';
import { addressOf } from './linux-io.js';

const MiB = 1024 * 1024;
const disk = mkdtempSync(join(tmpdir(), 'nbd-file-'));
const shm = mkdtempSync('/dev/shm/nbd-file-');
afterAll(() => {
  rmSync(disk, { recursive: true, force: true });
  rmSync(shm, { recursive: true, force: true });
});

/** A sparse file: `size` bytes with data only where `data` says (offset, length). */
function sparseFile(path: string, size: number, data: [number, number][]): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  for (const [at, n] of data) writeSync(fd, fill(new Uint8Array(n), at / 4096 + 1), 0, n, at);
  closeSync(fd);
}
const blocks = (path: string) => statSync(path).blocks * 512;

describe('FileDevice on a regular file', () => {
  it('reports holes and data from SEEK_DATA/SEEK_HOLE, past the end a hole', async () => {
    const path = join(disk, 'sparse.img');
    sparseFile(path, 8 * MiB, [
      [MiB, 64 * 1024],
      [5 * MiB, 128 * 1024],
    ]);
    const dev = await FileDevice.open(path, { size: 9 * MiB });
    expect(dev.kind).toBe('file');
    expect(await dev.extents!(0, 9 * MiB, eio())).toEqual([
      { length: MiB, flags: 3 },
      { length: 64 * 1024, flags: 0 },
      { length: 4 * MiB - 64 * 1024, flags: 3 },
      { length: 128 * 1024, flags: 0 },
      { length: 4 * MiB - 128 * 1024, flags: 3 },
    ]);
    expect(await dev.extents!(MiB + 4096, 4096, eio(true))).toEqual([{ length: 4096, flags: 0 }]);
    const b = new Uint8Array(8192);
    await dev.readAt(b, 9 * MiB - 4096, io); // half past the end of the file: zeroes
    expect(b.every((x) => x === 0)).toBe(true);
    await dev.close();
  });

  it('remembers data runs between lookups, and forgets them where it trims or zeroes', async () => {
    const path = join(disk, 'runs.img');
    sparseFile(path, 4 * MiB, [[0, 4 * MiB]]);
    const dev = await FileDevice.open(path);
    const all = await Promise.all([0, 1, 2, 3].map((i) => dev.extents!(i * MiB, MiB, eio())));
    expect(all.every((e) => e.length === 1 && e[0]!.flags === 0)).toBe(true);
    await dev.trim!(MiB, MiB, io);
    await dev.zero!(3 * MiB, 64 * 1024, zio());
    expect(await dev.extents!(0, 4 * MiB, eio())).toEqual([
      { length: MiB, flags: 0 },
      { length: MiB, flags: 3 },
      { length: MiB, flags: 0 },
      { length: 64 * 1024, flags: 3 },
      { length: MiB - 64 * 1024, flags: 0 },
    ]);
    await dev.writeAt!(new Uint8Array(4096).fill(1), MiB, io); // a write turns a hole into data
    expect((await dev.extents!(MiB, 8192, eio()))[0]).toEqual({ length: 4096, flags: 0 });
    await dev.close();
  });

  it("trim punches holes (the file's blocks shrink); zero with NO_HOLE keeps them allocated", async () => {
    const path = join(disk, 'trim.img');
    sparseFile(path, 4 * MiB, [[0, 4 * MiB]]);
    const dev = await FileDevice.open(path);
    const full = blocks(path);
    await dev.trim!(0, MiB, io);
    expect(blocks(path)).toBeLessThanOrEqual(full - MiB);
    await dev.zero!(MiB, MiB, zio({ noHole: true }));
    expect(blocks(path)).toBeLessThanOrEqual(full - MiB);
    expect(blocks(path)).toBeGreaterThan(full - 2 * MiB);
    await dev.zero!(2 * MiB, MiB, zio({ fua: true }));
    expect(blocks(path)).toBeLessThanOrEqual(full - 2 * MiB);
    const b = new Uint8Array(3 * MiB);
    await dev.readAt(b, 0, io);
    expect(b.every((x) => x === 0)).toBe(true);
    await dev.close();
  });

  it('refuses a fast zero with NO_HOLE where the file system has no ZERO_RANGE (tmpfs), but punches without it', async () => {
    const path = join(shm, 'shm.img');
    sparseFile(path, MiB, [[0, MiB]]);
    const dev = await FileDevice.open(path);
    await expect(dev.zero!(0, 4096, zio({ noHole: true, fast: true }))).rejects.toMatchObject({ errno: Errno.ENOTSUP });
    await dev.zero!(0, 4096, zio({ fast: true }));
    await dev.zero!(4096, 4096, zio({ noHole: true })); // written zeroes
    const b = new Uint8Array(8192).fill(1);
    await dev.readAt(b, 0, io);
    expect(b.every((x) => x === 0)).toBe(true);
    await dev.close();
  });

  it('writes with FUA (pwritev2 RWF_DSYNC), read-only refuses writes, and share opens the same file', async () => {
    const path = join(disk, 'fua.img');
    sparseFile(path, MiB, []);
    const dev = await FileDevice.open(path);
    expect(dev.fua).toBe(true);
    const data = fill(new Uint8Array(10_000), 4);
    await dev.writeAt!(data, 1234, { ...io, fua: true });
    expect(readFileSync(path).subarray(1234, 11_234)).toEqual(Buffer.from(data));
    const copy = await openDevice(structuredClone(dev.share().args));
    const b = new Uint8Array(10_000);
    await copy.readAt(b, 1234);
    expect(b).toEqual(data);
    await copy.close();
    const ro = await FileDevice.open(path, { readOnly: true });
    expect(ro.readOnly).toBe(true);
    expect(ro.writeAt ?? ro.trim ?? ro.zero).toBeUndefined();
    await ro.close();
    await dev.close();
  });

  it('O_DIRECT: aligned block sizes, unaligned memory through bounce buffers', async () => {
    const path = join(disk, 'direct.img');
    sparseFile(path, 4 * MiB, [[0, MiB]]);
    const dev = await FileDevice.open(path, { direct: true });
    expect(dev.blockSizes).toEqual({ min: 4096, preferred: 4096, max: 0xffffffff });
    expect(dev.cache).toBeUndefined();
    const backing = new Uint8Array(3 * 4096 + 1);
    const odd = backing.subarray(1); // never page-aligned
    expect(isAlignedMemory(odd)).toBe(false);
    fill(odd, 8);
    await dev.writeAt!(odd, 8192, io);
    await dev.writeAt!(odd, 65536, { ...io, fua: true });
    const back = new Uint8Array(3 * 4096 + 7).subarray(7);
    await dev.readAt(back, 8192);
    expect(back).toEqual(odd);
    expect(readFileSync(path).subarray(65536, 65536 + odd.length)).toEqual(Buffer.from(odd));
    await expect(dev.readAt(new Uint8Array(100), 1)).rejects.toBeTruthy(); // the kernel's EINVAL: misaligned
    await dev.close();
    await expect(FileDevice.open(path, { direct: true, directAlignment: 1000 })).rejects.toBeInstanceOf(NbdInvalidArgumentError);
  });

  it('fromHandle: a handle opened elsewhere, closed by close() only when owned', async () => {
    const path = join(disk, 'handle.img');
    sparseFile(path, 4 * MiB, [[MiB, 4096]]);
    const fh = await open(path, 'r+');
    const dev = await FileDevice.fromHandle(fh);
    expect(dev.size).toBe(4 * MiB);
    expect(await dev.extents!(0, 2 * MiB, eio())).toEqual([
      { length: MiB, flags: 3 },
      { length: 4096, flags: 0 },
      { length: MiB - 4096, flags: 3 },
    ]);
    await dev.close();
    expect((await fh.stat()).size).toBe(4 * MiB); // still open: the caller's
    const owned = await FileDevice.fromHandle(fh, { owned: true, readOnly: true });
    expect(owned.writeAt).toBeUndefined();
    await owned.close();
    await expect(fh.stat()).rejects.toThrow(/closed/);
  });

  it('refuses what is neither a file nor a block device, and bad sizes', async () => {
    await expect(FileDevice.open(disk)).rejects.toBeTruthy();
    await expect(FileDevice.open('/dev/null')).rejects.toThrow(/not a regular file or a block device/);
    const path = join(disk, 'x.img');
    sparseFile(path, 4096, []);
    await expect(FileDevice.open(path, { size: -1 })).rejects.toThrow(/bad size/);
    await expect(FileDevice.open(path, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(NbdAbortError);
    expect(addressOf(new Uint8Array(8))).toBeGreaterThan(0);
    expect(new NbdErrnoError(Errno.EIO).errno).toBe(5);
  });
});
