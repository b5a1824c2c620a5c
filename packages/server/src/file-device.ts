// A device over a regular file or a block device, through fs.FileHandle
// positional reads and writes. Node has no fallocate (punch hole) and no
// SEEK_HOLE, so this device has neither trim nor extents (see README gaps).
import { type FileHandle, open, readFile } from 'node:fs/promises';
import { NbdErrnoError, Errno } from '@nbd/protocol';
import type { Device, DeviceRecipe, IoOptions } from './device.js';

export interface FileDeviceOptions {
  readOnly?: boolean;
  /** Size in bytes; defaults to the file size (block devices: /sys/dev/block/M:m/size). */
  size?: number;
}

export class FileDevice implements Device {
  readonly readOnly: boolean;
  readonly multiConn = true; // one kernel page cache behind every connection
  readonly writeAt?: Device['writeAt'];

  private constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    readonly size: number,
    readOnly: boolean,
  ) {
    this.readOnly = readOnly;
    if (!readOnly) this.writeAt = (buf, offset) => this.write(buf, offset);
  }

  /** Opens `path`; the size comes from fstat, or sysfs for a block device. */
  static async open(path: string, opts: FileDeviceOptions = {}): Promise<FileDevice> {
    const readOnly = opts.readOnly ?? false;
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const st = await fh.stat();
      let size = opts.size ?? st.size;
      if (opts.size === undefined && st.isBlockDevice()) size = await blockDeviceSize(st.rdev);
      if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`FileDevice: bad size ${size}`);
      return new FileDevice(fh, path, size, readOnly);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async readAt(buf: Uint8Array, offset: number): Promise<void> {
    let pos = 0;
    while (pos < buf.length) {
      const { bytesRead } = await this.fh.read(buf, pos, buf.length - pos, offset + pos);
      if (bytesRead === 0) {
        // A file shorter than the export (e.g. truncated under us) reads as zeroes.
        buf.fill(0, pos);
        return;
      }
      pos += bytesRead;
    }
  }

  private async write(buf: Uint8Array, offset: number): Promise<void> {
    let pos = 0;
    while (pos < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, pos, buf.length - pos, offset + pos);
      if (bytesWritten === 0) throw new NbdErrnoError(Errno.ENOSPC, 'short write');
      pos += bytesWritten;
    }
  }

  async sync(_opts?: IoOptions): Promise<void> {
    await this.fh.datasync();
  }

  /** Worker threads open the same path with their own file descriptor. */
  share(): DeviceRecipe {
    return { module: import.meta.url, args: { path: this.path, readOnly: this.readOnly, size: this.size } };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** The worker-thread side of {@link FileDevice.share}. */
export async function openDevice(args: unknown): Promise<FileDevice> {
  const a = args as Partial<{ path: string; readOnly: boolean; size: number }>;
  if (typeof a?.path !== 'string' || typeof a.readOnly !== 'boolean' || typeof a.size !== 'number') {
    throw new TypeError('FileDevice openDevice: expected { path, readOnly, size }');
  }
  return FileDevice.open(a.path, { readOnly: a.readOnly, size: a.size });
}

// Node has no BLKGETSIZE64 ioctl; sysfs gives the size in 512-byte sectors.
async function blockDeviceSize(rdev: number): Promise<number> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  const text = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  return Number(text.trim()) * 512;
}
