// The system calls Node lacks, through @nbd/node's one libc loader: lseek with
// SEEK_DATA/SEEK_HOLE, fallocate, the block-device ioctls, pwritev2 with RWF_DSYNC,
// posix_fadvise, and the address of a buffer (O_DIRECT needs aligned memory).
// Anything that may wait on the disk runs as a koffi asynchronous call, on libuv's
// thread pool like Node's own fs calls, so the event loop never blocks on it.

import { NbdSystemError } from '@nbd/node';
import { errno, libcFunction } from '@nbd/node/internal';
import { NbdErrnoError, toNbdErrno } from '@nbd/protocol';

type Native = ((...args: unknown[]) => number | bigint) & {
  async(...args: unknown[]): void;
};

const fn = (decl: string): Native => libcFunction(decl) as Native;

/** lseek whence: the next data at or after the offset. */
export const SEEK_DATA = 3;
/** lseek whence: the next hole at or after the offset (the end of the file counts). */
export const SEEK_HOLE = 4;
/** fallocate mode bits (linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** Deallocate the range (with KEEP_SIZE); it reads as zeroes. */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** Zero the range, keeping it allocated (unwritten extents). */
export const FALLOC_FL_ZERO_RANGE = 0x10;
const RWF_DSYNC = 0x02;
const POSIX_FADV_WILLNEED = 3;
const ENXIO = 6;

/** Block-device ioctls (include/uapi/linux/fs.h). */
export const BlockIoctl = {
  /** `_IO(0x12, 104)`: logical sector size, int. */
  SSZGET: 0x1268,
  /** `_IO(0x12, 123)`: physical sector size, unsigned int. */
  PBSZGET: 0x127b,
  /** `_IOR(0x12, 114, size_t)`: size in bytes, u64. */
  GETSIZE64: 0x80081272,
  /** `_IO(0x12, 119)`: discard a `u64[2]` {offset, length}. */
  DISCARD: 0x1277,
  /** `_IO(0x12, 127)`: write zeroes over a `u64[2]` {offset, length}, never unmapping. */
  ZEROOUT: 0x127f,
} as const;

/** A failed system call as the error a device throws: the NBD errno it maps to, the system error as `cause`. */
export function deviceError(err: NbdSystemError): NbdErrnoError {
  return new NbdErrnoError(toNbdErrno({ code: err.errnoName }), err.message, { cause: err });
}

/** Whether a failed call means "this file system or device cannot do that". */
export function isUnsupported(err: unknown): boolean {
  const name = err instanceof NbdSystemError ? err.errnoName : undefined;
  return name === 'EOPNOTSUPP' || name === 'ENOTSUP' || name === 'ENOSYS' || name === 'ENOTTY';
}

/** Runs `f(...args)` on the thread pool; resolves with its result, rejects with an NbdSystemError when it returns < 0. */
function callAsync(f: Native, what: string, ...args: unknown[]): Promise<number> {
  const { promise, resolve, reject } = Promise.withResolvers<number>();
  f.async(...args, (err: unknown, res: number | bigint) => {
    if (err) reject(new NbdSystemError(`${what}: ${(err as Error).message}`, 'EIO', 0, { cause: err }));
    else if (Number(res) < 0) reject(NbdSystemError.fromErrno(errno(), what));
    else resolve(Number(res));
  });
  return promise;
}

const memmove = () => fn('uintptr_t memmove(uint8_t *dst, const uint8_t *src, size_t n)');

/**
 * The address of a view's first byte. memmove returns its destination: moving
 * nothing onto itself is a harmless way to learn where koffi saw the memory.
 */
export function addressOf(view: Uint8Array): number {
  return Number(memmove()(view, view, 0));
}

/**
 * lseek(SEEK_DATA or SEEK_HOLE): the next data or hole at or after `offset`, or
 * undefined past the last data (ENXIO). Synchronous: the file system answers from
 * its extent tree without I/O on the data.
 */
export function seek(fd: number, offset: number, whence: typeof SEEK_DATA | typeof SEEK_HOLE): number | undefined {
  const r = Number(fn('int64_t lseek(int fd, int64_t offset, int whence)')(fd, offset, whence));
  if (r >= 0) return r;
  const e = errno();
  if (e === ENXIO) return undefined;
  throw NbdSystemError.fromErrno(e, `lseek(${whence === SEEK_DATA ? 'SEEK_DATA' : 'SEEK_HOLE'}, ${offset})`);
}

/** {@link seek} on the thread pool: SEEK_HOLE walks a data run page by page on tmpfs (14 ms per GiB). */
export async function seekAsync(fd: number, offset: number, whence: typeof SEEK_DATA | typeof SEEK_HOLE): Promise<number | undefined> {
  const f = fn('int64_t lseek(int fd, int64_t offset, int whence)');
  const { promise, resolve, reject } = Promise.withResolvers<number | undefined>();
  f.async(fd, offset, whence, (err: unknown, res: number | bigint) => {
    const r = Number(res);
    if (err) reject(err as Error);
    else if (r >= 0) resolve(r);
    else {
      const e = errno();
      if (e === ENXIO) resolve(undefined);
      else reject(NbdSystemError.fromErrno(e, `lseek(${whence === SEEK_DATA ? 'SEEK_DATA' : 'SEEK_HOLE'}, ${offset})`));
    }
  });
  return promise;
}

/** fallocate(2) on the thread pool. */
export async function fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
  await callAsync(
    fn('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
    `fallocate(mode 0x${mode.toString(16)}, ${offset}, ${length})`,
    fd,
    mode,
    offset,
    length,
  );
}

/** BLKDISCARD or BLKZEROOUT over a byte range, on the thread pool. */
export async function blockRangeIoctl(
  fd: number,
  request: typeof BlockIoctl.DISCARD | typeof BlockIoctl.ZEROOUT,
  offset: number,
  length: number,
): Promise<void> {
  const range = new BigUint64Array([BigInt(offset), BigInt(length)]);
  const name = request === BlockIoctl.DISCARD ? 'BLKDISCARD' : 'BLKZEROOUT';
  await callAsync(
    fn('int ioctl(int fd, unsigned long request, const uint8_t *arg)'),
    `${name}(${offset}, ${length})`,
    fd,
    request,
    new Uint8Array(range.buffer),
  );
}

/** An ioctl that fills `out` (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET): immediate, no I/O. */
function ioctlOut(fd: number, request: number, out: Uint8Array, what: string): void {
  if (Number(fn('int ioctl(int fd, unsigned long request, uint8_t *arg)')(fd, request, out)) < 0)
    throw NbdSystemError.fromErrno(errno(), what);
}

/** A block device's size in bytes (BLKGETSIZE64). */
export function blockDeviceSize(fd: number): number {
  const out = new BigUint64Array(1);
  ioctlOut(fd, BlockIoctl.GETSIZE64, new Uint8Array(out.buffer), 'BLKGETSIZE64');
  return Number(out[0]);
}

/** A block device's logical and physical sector sizes (BLKSSZGET, BLKPBSZGET). */
export function sectorSizes(fd: number): { logical: number; physical: number } {
  const out = new Uint32Array(2);
  ioctlOut(fd, BlockIoctl.SSZGET, new Uint8Array(out.buffer, 0, 4), 'BLKSSZGET');
  ioctlOut(fd, BlockIoctl.PBSZGET, new Uint8Array(out.buffer, 4, 4), 'BLKPBSZGET');
  return { logical: out[0]!, physical: out[1]! };
}

/**
 * pwritev2(RWF_DSYNC): one write that is durable when it returns (native FUA), on
 * the thread pool. Returns the bytes written. `buf` stays referenced until then.
 */
export async function pwriteDsync(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  const iov = new BigUint64Array([BigInt(addressOf(buf)), BigInt(buf.length)]);
  const f = fn('int64_t pwritev2(int fd, const uint8_t *iov, int iovcnt, int64_t offset, int flags)');
  const n = await callAsync(f, `pwritev2(RWF_DSYNC, ${offset}, ${buf.length})`, fd, new Uint8Array(iov.buffer), 1, offset, RWF_DSYNC);
  // Keeps the memory the iovec points at alive until the call is over.
  void buf.length;
  return n;
}

const RWF_NOWAIT = 0x08;
const EAGAIN = 11;
/** {@link readNoWait}: the file system cannot say whether a read would wait (tmpfs, before Linux 4.14). */
export const NOWAIT_UNSUPPORTED = -2;
/** {@link readNoWait}: the data is not all in the page cache. */
export const WOULD_BLOCK = -1;
// One iovec for the synchronous calls (never two at once on a thread).
const iov = new BigUint64Array(2);
const iovBytes = new Uint8Array(iov.buffer);

/**
 * preadv2(RWF_NOWAIT), synchronous: reads what the page cache already holds without
 * ever waiting for the disk. Returns the bytes read (0 at the end of the file),
 * WOULD_BLOCK when the first bytes are not cached, or NOWAIT_UNSUPPORTED.
 */
export function readNoWait(fd: number, buf: Uint8Array, offset: number): number {
  iov[0] = BigInt(addressOf(buf));
  iov[1] = BigInt(buf.length);
  const n = Number(
    fn('int64_t preadv2(int fd, const uint8_t *iov, int iovcnt, int64_t offset, int flags)')(fd, iovBytes, 1, offset, RWF_NOWAIT),
  );
  if (n >= 0) return n;
  const e = errno();
  if (e === EAGAIN) return WOULD_BLOCK;
  const err = NbdSystemError.fromErrno(e, `preadv2(RWF_NOWAIT, ${offset}, ${buf.length})`);
  if (isUnsupported(err) || err.errnoName === 'EINVAL') return NOWAIT_UNSUPPORTED;
  throw err;
}

/** posix_fadvise(WILLNEED): start reading a range into the page cache (NBD_CMD_CACHE). */
export async function adviseWillNeed(fd: number, offset: number, length: number): Promise<void> {
  const f = fn('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)');
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  // posix_fadvise returns the error number itself instead of setting errno.
  f.async(fd, offset, length, POSIX_FADV_WILLNEED, (err: unknown, res: number) => {
    if (err) reject(err as Error);
    else if (res !== 0) reject(NbdSystemError.fromErrno(res, 'posix_fadvise(WILLNEED)'));
    else resolve();
  });
  return promise;
}
