// A device over a regular file or a block device. Reads and writes are Node's
// positional FileHandle I/O (libuv's thread pool); what Node lacks comes through
// linux-io.ts: extents from SEEK_DATA/SEEK_HOLE, trim as a punched hole or
// BLKDISCARD, zero as a punched hole, FALLOC_FL_ZERO_RANGE or BLKZEROOUT, native
// FUA as pwritev2(RWF_DSYNC), prefetch as posix_fadvise(WILLNEED), and a block
// device's size and sector sizes from its ioctls. Elsewhere than Linux only reads,
// writes and flush remain (the server emulates the rest).
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { NbdSystemError } from '@nbd/node';
import { type BlockSizes, Errno, isPowerOfTwo, NbdErrnoError, NbdInvalidArgumentError, throwIfAborted, writeZeroes } from '@nbd/protocol';
import type { Device, DeviceRecipe, IoOptions, MaybePromise, ZeroOptions } from '@nbd/server';
import { BouncePool, isAlignedMemory } from './aligned.js';
import { blockQueue } from './block-queue.js';
import { FileExtents } from './file-extents.js';
import {
  adviseWillNeed,
  BlockIoctl,
  blockDeviceSize,
  blockRangeIoctl,
  deviceError,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  isUnsupported,
  NOWAIT_UNSUPPORTED,
  pwriteDsync,
  readNoWait,
  sectorSizes,
} from './linux-io.js';
import { readFully, writeFully, zeroBuffer } from './positional.js';

/** Options of {@link FileDevice.open}. */
export interface FileDeviceOptions {
  /** Open read-only: the device has no writeAt, trim or zero, and says `readOnly`. */
  readOnly?: boolean;
  /** Size in bytes; defaults to the file's size (a block device's from BLKGETSIZE64). */
  size?: number;
  /** Open with O_DIRECT (no page cache); requests must then be aligned to `blockSizes.min`. */
  direct?: boolean;
  /** With `direct` on a regular file: the alignment requests need (a power of two, default 4096). */
  directAlignment?: number;
  /** Aborts the open (a device opened meanwhile is closed). */
  signal?: AbortSignal;
}

/** What kind of file a FileDevice serves. */
export type FileKind = 'file' | 'block';

const linux = process.platform === 'linux';
/** Largest read tried synchronously from the page cache: a memcpy of ~100 µs at most on the event loop. */
const NOWAIT_MAX = 1024 * 1024;
/** No limit of our own on a request's length (the server caps it at its maximum payload). */
const MAX_BLOCK = 0xffffffff;

/** What open() learnt about the file, handed to the constructor. */
interface FileFacts {
  kind: FileKind;
  size: number;
  blockSizes: BlockSizes | undefined;
  discard: boolean;
  fastZero: boolean;
  rotational: boolean | undefined;
}

/** A regular file or a block device as a Device; open it with {@link FileDevice.open}. */
export class FileDevice implements Device {
  readonly size: number;
  readonly readOnly: boolean;
  /** One page cache (or one disk) behind every connection: a flush on one covers all. */
  readonly multiConn = true;
  /** Linux: FUA honoured natively (pwritev2 RWF_DSYNC, else write + fdatasync). Elsewhere the server syncs after the write. */
  readonly fua: boolean;
  readonly blockSizes?: BlockSizes;
  readonly rotational?: boolean;
  /** A regular file or a block device. */
  readonly kind: FileKind;
  readonly writeAt?: NonNullable<Device['writeAt']>;
  readonly trim?: NonNullable<Device['trim']>;
  readonly zero?: NonNullable<Device['zero']>;
  readonly extents?: NonNullable<Device['extents']>;
  readonly cache?: NonNullable<Device['cache']>;

  private readonly fd: number;
  /** A regular file's allocation map (Linux). */
  private map: FileExtents | undefined;
  private readonly bounce = new BouncePool();
  /** Learnt on first use: what this file system refuses (EOPNOTSUPP) is not tried again. */
  private punchHole = linux;
  private zeroRange = linux;
  private dsyncWrite = linux;
  /** Cached reads answered synchronously (not with O_DIRECT; off where the file system cannot tell, e.g. tmpfs). */
  private noWait: boolean;
  private readonly fastZero: boolean;

  private constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly direct: boolean,
    readOnly: boolean,
    facts: FileFacts,
    private readonly owned = true,
  ) {
    this.fd = fh.fd;
    this.size = facts.size;
    this.readOnly = readOnly;
    this.kind = facts.kind;
    this.fua = linux;
    this.blockSizes = facts.blockSizes;
    this.rotational = facts.rotational;
    this.fastZero = facts.fastZero;
    this.noWait = linux && !direct;
    if (linux && !direct) this.cache = (offset, length) => this.prefetch(offset, length);
    if (linux && facts.kind === 'file') {
      const map = new FileExtents(this.fd);
      this.map = map;
      this.extents = (offset, length, opts) => map.extents(offset, length, opts);
    }
    if (readOnly) return;
    this.writeAt = (buf, offset, opts) => this.write(buf, offset, opts);
    if (!linux) return;
    if (facts.kind === 'file') {
      this.trim = (offset, length, opts) => this.punch(offset, length, opts);
      this.zero = (offset, length, opts) => this.zeroFile(offset, length, opts);
    } else {
      if (facts.discard) this.trim = (offset, length, opts) => this.discard(offset, length, opts);
      this.zero = (offset, length, opts) => this.zeroBlocks(offset, length, opts);
    }
  }

  /** Opens `path` (a regular file or a block device) and learns what it can do. */
  static async open(path: string, opts: FileDeviceOptions = {}): Promise<FileDevice> {
    const readOnly = opts.readOnly ?? false;
    const direct = opts.direct ?? false;
    let flags = readOnly ? constants.O_RDONLY : constants.O_RDWR;
    if (direct) {
      if (constants.O_DIRECT === undefined)
        throw new NbdInvalidArgumentError(`FileDevice: O_DIRECT is not available on ${process.platform}`);
      flags |= constants.O_DIRECT;
    }
    throwIfAborted(opts.signal, 'FileDevice.open');
    let fh: FileHandle;
    try {
      fh = await open(path, flags);
    } catch (e) {
      if (direct && (e as { code?: string }).code === 'EINVAL') {
        throw new NbdInvalidArgumentError(`FileDevice: ${path}: this file system does not support O_DIRECT`, { cause: e });
      }
      throw e;
    }
    try {
      const facts = await learn(fh, opts);
      throwIfAborted(opts.signal, 'FileDevice.open');
      return new FileDevice(fh, path, direct, readOnly, facts);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /**
   * A FileDevice over a handle opened elsewhere (a file created with other flags, a
   * descriptor inherited as standard output). `direct`: the handle has O_DIRECT.
   * `owned` (default false): close() closes the handle; otherwise its opener does.
   * Worker threads reopen it as `/proc/self/fd/N` (Linux).
   */
  static async fromHandle(fh: FileHandle, opts: FileDeviceOptions & { owned?: boolean } = {}): Promise<FileDevice> {
    const facts = await learn(fh, opts);
    throwIfAborted(opts.signal, 'FileDevice.fromHandle');
    return new FileDevice(fh, `/proc/self/fd/${fh.fd}`, opts.direct ?? false, opts.readOnly ?? false, facts, opts.owned ?? false);
  }

  /**
   * Reads up to 1 MiB that the page cache already holds are answered at once
   * (preadv2 RWF_NOWAIT, a few microseconds, never waiting for the disk); the
   * rest goes to the thread pool.
   */
  readAt(buf: Uint8Array, offset: number, _opts?: IoOptions): MaybePromise<void> {
    if (this.direct && !isAlignedMemory(buf)) return this.bounced(buf, (b) => readFully(this.fh, b, offset), true);
    let pos = 0;
    while (this.noWait && buf.length <= NOWAIT_MAX && pos < buf.length) {
      let n: number;
      try {
        n = readNoWait(this.fd, buf.subarray(pos), offset + pos);
      } catch (e) {
        throw deviceError(e as NbdSystemError);
      }
      if (n === 0) {
        buf.fill(0, pos); // past the end of the file
        return;
      }
      if (n === NOWAIT_UNSUPPORTED) this.noWait = false;
      if (n < 0) break;
      pos += n;
    }
    if (pos === buf.length) return;
    return readFully(this.fh, pos === 0 ? buf : buf.subarray(pos), offset + pos);
  }

  async sync(_opts?: IoOptions): Promise<void> {
    await this.fh.datasync();
  }

  /** Worker threads open the same path with their own descriptor. */
  share(): DeviceRecipe {
    const args: FileDeviceArgs = { path: this.path, readOnly: this.readOnly, size: this.size, direct: this.direct };
    if (this.kind === 'file' && this.direct) args.directAlignment = this.blockSizes?.min;
    return { module: import.meta.url, args };
  }

  async close(): Promise<void> {
    if (this.owned) await this.fh.close();
  }

  // ------------------------------------------------------------ writes

  private write(buf: Uint8Array, offset: number, opts: IoOptions): Promise<void> {
    if (this.direct && !isAlignedMemory(buf)) return this.bounced(buf, (b) => this.writeAligned(b, offset, opts.fua), false);
    return this.writeAligned(buf, offset, opts.fua);
  }

  private async writeAligned(buf: Uint8Array, offset: number, fua: boolean): Promise<void> {
    if (fua && this.dsyncWrite) {
      try {
        for (let pos = 0; pos < buf.length; ) pos += await pwriteDsync(this.fd, buf.subarray(pos), offset + pos);
        return;
      } catch (e) {
        if (!isUnsupported(e)) throw e instanceof NbdSystemError ? deviceError(e) : e;
        this.dsyncWrite = false; // kernels before 4.7: write, then fdatasync
      }
    }
    await writeFully(this.fh, buf, offset);
    if (fua) await this.fh.datasync();
  }

  /** Runs `io` on an aligned copy of `buf` (O_DIRECT with unaligned memory); `read` copies back. */
  private async bounced(buf: Uint8Array, io: (b: Uint8Array) => Promise<void>, read: boolean): Promise<void> {
    const whole = this.bounce.take(buf.length);
    const b = whole.subarray(0, buf.length);
    try {
      if (!read) b.set(buf);
      await io(b);
      if (read) buf.set(b);
    } finally {
      this.bounce.give(whole);
    }
  }

  private async afterWrite(fua: boolean): Promise<void> {
    if (fua) await this.fh.datasync();
  }

  // ------------------------------------------------------------ regular files

  /** Trim = punch a hole. Trim is advisory: where holes cannot be punched it does nothing. */
  private async punch(offset: number, length: number, opts: IoOptions): Promise<void> {
    if (this.punchHole && (await this.tryFallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)))
      await this.afterWrite(opts.fua);
  }

  /** A hole where allowed; else ZERO_RANGE (allocated, reads zero); else written zeroes, which a fast zero refuses. */
  private async zeroFile(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    if (!opts.noHole && this.punchHole && (await this.tryFallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length))) {
      return this.afterWrite(opts.fua);
    }
    if (this.zeroRange && (await this.tryFallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)))
      return this.afterWrite(opts.fua);
    if (opts.fast) throw new NbdErrnoError(Errno.ENOTSUP, 'fast zero: this file system can only zero by writing');
    await this.writeZeroes(offset, length, opts.fua);
  }

  /** fallocate; false (and never tried again) where the file system does not support `mode`. */
  private async tryFallocate(mode: number, offset: number, length: number): Promise<boolean> {
    try {
      await fallocate(this.fd, mode, offset, length);
      this.map?.forget(offset, length);
      return true;
    } catch (e) {
      if (!isUnsupported(e)) throw deviceError(e as NbdSystemError);
      if ((mode & FALLOC_FL_ZERO_RANGE) !== 0) this.zeroRange = false;
      else this.punchHole = false;
      return false;
    }
  }

  private async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    await writeZeroes(offset, length, (zeroes, at) => writeFully(this.fh, zeroes, at), zeroBuffer(this.direct));
    await this.afterWrite(fua);
  }

  private async prefetch(offset: number, length: number): Promise<void> {
    try {
      await adviseWillNeed(this.fd, offset, length);
    } catch (e) {
      throw e instanceof NbdSystemError ? deviceError(e) : e;
    }
  }

  // ------------------------------------------------------------ block devices

  /** Trim = BLKDISCARD (offered only when the queue discards). */
  private async discard(offset: number, length: number, opts: IoOptions): Promise<void> {
    try {
      await blockRangeIoctl(this.fd, BlockIoctl.DISCARD, offset, length);
    } catch (e) {
      if (!isUnsupported(e)) throw deviceError(e as NbdSystemError);
      return;
    }
    await this.afterWrite(opts.fua);
  }

  /** BLKZEROOUT never unmaps, so NO_HOLE holds; it is fast only where the device zeroes in hardware. */
  private async zeroBlocks(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    if (opts.fast && !this.fastZero) throw new NbdErrnoError(Errno.ENOTSUP, 'fast zero: this device has no hardware write-zeroes');
    try {
      await blockRangeIoctl(this.fd, BlockIoctl.ZEROOUT, offset, length);
    } catch (e) {
      if (!isUnsupported(e)) throw deviceError(e as NbdSystemError);
      if (opts.fast) throw new NbdErrnoError(Errno.ENOTSUP, 'fast zero: BLKZEROOUT is not supported here');
      return this.writeZeroes(offset, length, opts.fua);
    }
    await this.afterWrite(opts.fua);
  }
}

/** What `share()` hands a worker thread. */
export interface FileDeviceArgs {
  path: string;
  readOnly: boolean;
  size: number;
  direct: boolean;
  directAlignment?: number;
}

/** The worker-thread side of {@link FileDevice.share}. */
export async function openDevice(args: unknown): Promise<FileDevice> {
  const a = args as Partial<FileDeviceArgs> | null;
  if (typeof a?.path !== 'string' || typeof a.readOnly !== 'boolean' || typeof a.size !== 'number' || typeof a.direct !== 'boolean') {
    throw new TypeError('FileDevice openDevice: expected { path, readOnly, size, direct }');
  }
  return FileDevice.open(a.path, { readOnly: a.readOnly, size: a.size, direct: a.direct, directAlignment: a.directAlignment });
}

/** Size, block sizes and abilities of an open file. */
async function learn(fh: FileHandle, opts: FileDeviceOptions): Promise<FileFacts> {
  const st = await fh.stat();
  if (st.isBlockDevice()) {
    if (!linux && opts.size === undefined)
      throw new NbdInvalidArgumentError(`FileDevice: give the size of a block device on ${process.platform}`);
    const size = opts.size ?? blockDeviceSize(fh.fd);
    checkSize(size);
    if (!linux) return { kind: 'block', size, blockSizes: undefined, discard: false, fastZero: false, rotational: undefined };
    const { logical, physical } = sectorSizes(fh.fd);
    const q = blockQueue(st.rdev);
    const blockSizes = { min: logical, preferred: Math.max(physical, logical), max: MAX_BLOCK };
    return { kind: 'block', size, blockSizes, discard: q.discard, fastZero: q.writeZeroes, rotational: q.rotational };
  }
  if (!st.isFile()) throw new NbdInvalidArgumentError('FileDevice: not a regular file or a block device');
  const size = opts.size ?? st.size;
  checkSize(size);
  let blockSizes: BlockSizes | undefined;
  if (opts.direct) {
    const align = opts.directAlignment ?? 4096;
    if (!(isPowerOfTwo(align) && align >= 512))
      throw new NbdInvalidArgumentError(`FileDevice: directAlignment ${align} is not a power of two ≥ 512`);
    blockSizes = { min: align, preferred: Math.max(align, 4096), max: MAX_BLOCK };
  }
  return { kind: 'file', size, blockSizes, discard: true, fastZero: false, rotational: undefined };
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`FileDevice: bad size ${size}`);
}
