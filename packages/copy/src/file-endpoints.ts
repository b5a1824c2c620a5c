// Files as copy endpoints: a path we open (and close), or a FileHandle the caller
// owns. Reads and writes loop until done; a write that makes no progress is an
// error (it would loop forever otherwise).
import type { Stats } from 'node:fs';
import { type FileHandle, open as openFile, readFile } from 'node:fs/promises';
import { NbdSystemError } from '@nbd/node';
import type { EndpointOptions, Sink, Source } from './endpoints.js';

/** Major and minor numbers of a device number (glibc's gnu_dev_major/minor encoding). */
export function deviceNumbers(rdev: number): { major: number; minor: number } {
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev % 2 ** 32;
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00) | (((high & 0xfff) << 20) >>> 0);
  return { major: major >>> 0, minor: minor >>> 0 };
}

/**
 * Bytes of a block device, from sysfs (`/sys/dev/block/MAJOR:MINOR/size` counts
 * 512-byte sectors): fstat says 0 for a block device.
 */
export async function blockDeviceSize(rdev: number, sysfs = '/sys'): Promise<number> {
  const { major, minor } = deviceNumbers(rdev);
  const where = `${sysfs}/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await readFile(where, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new NbdSystemError(
      `copy: cannot find the size of block device ${major}:${minor} (${where}: ${err.code ?? err.message})`,
      err.code ?? 'EIO',
      0,
      { cause: e },
    );
  }
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors) || sectors < 0)
    throw new NbdSystemError(`copy: ${where} holds no sector count: "${text.trim()}"`, 'EIO');
  return sectors * 512;
}

/** A file's size: fstat's, or a block device's from sysfs. A handle opened here is closed if that fails. */
async function sizeOf(st: Stats, fh: FileHandle, opened: boolean): Promise<number> {
  if (!st.isBlockDevice()) return st.size;
  try {
    return await blockDeviceSize(st.rdev);
  } catch (e) {
    if (opened) await fh.close();
    throw e;
  }
}

/** Reads a file (opened from `path`, or the caller's `handle`). */
export async function fileSource(path: string | undefined, handle: FileHandle | undefined): Promise<Source> {
  const fh = handle ?? (await openFile(path!, 'r'));
  const st = await fh.stat();
  return {
    size: await sizeOf(st, fh, handle === undefined),
    connections: 1,
    read: async (off, len) => {
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, off + got);
        if (bytesRead === 0) {
          buf.fill(0, got); // the file shrank under us: what is gone reads as zeroes
          break;
        }
        got += bytesRead;
      }
      return { data: buf, release: noop };
    },
    close: async () => {
      if (handle === undefined) await fh.close();
    },
  };
}

/** Writes `buf` at `off` in full; a write that makes no progress throws instead of looping. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, off: number, name: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, off + done);
    if (bytesWritten <= 0) {
      throw new NbdSystemError(`copy: writing ${name} at ${off + done}: the write made no progress (0 bytes written)`, 'EIO');
    }
    done += bytesWritten;
  }
}

/**
 * Writes a file (created or truncated from `path`, or the caller's `handle`).
 * `joining`: a worker thread's second handle on it (opened without truncating, only synced at the end).
 */
export async function fileSink(
  path: string | undefined,
  handle: FileHandle | undefined,
  opts: EndpointOptions,
  joining: boolean,
): Promise<Sink> {
  const fh = handle ?? (await openFile(path!, joining ? 'r+' : 'w'));
  const st = await fh.stat();
  const name = path ?? `file descriptor ${fh.fd}`;
  // A regular file we just created (or an empty one) reads as zeroes: leave holes by not
  // writing, unless zeroes must be allocated.
  const knownZero = opts.destinationIsZero ?? (st.isFile() && st.size === 0 && opts.allocated !== true);
  let zeroes: Uint8Array | undefined;
  return {
    // A block device has a size the source must fit in; a file grows.
    size: st.isBlockDevice() ? await sizeOf(st, fh, handle === undefined) : undefined,
    connections: 1,
    knownZero,
    sequential: false,
    write: (buf, off) => writeFully(fh, buf, off, name),
    zero: async (off, len) => {
      zeroes ??= new Uint8Array(1 << 20);
      for (let pos = 0; pos < len; pos += zeroes.length)
        await writeFully(fh, zeroes.subarray(0, Math.min(zeroes.length, len - pos)), off + pos, name);
    },
    finish: async (size, flush) => {
      if (st.isFile() && !joining) await fh.truncate(size);
      if (flush && (st.isFile() || st.isBlockDevice())) await fh.sync();
    },
    close: async () => {
      if (handle === undefined) await fh.close();
    },
  };
}

function noop(): void {}
