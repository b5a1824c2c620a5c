// The ioctl interface (include/uapi/linux/nbd.h), for kernels or setups without the
// netlink family: configure /dev/nbdN from the main thread, then park NBD_DO_IT on
// a dedicated worker thread until the device disconnects.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { NbdSystemError } from '@nbd/node';
import { closeFd, ioctlInt, openRdwr } from '@nbd/node/internal';

/** `_IO(0xab, n)`: no size or direction bits. */
export const NbdIoctl = {
  SET_SOCK: 0xab00,
  SET_BLKSIZE: 0xab01,
  SET_SIZE: 0xab02,
  DO_IT: 0xab03,
  CLEAR_SOCK: 0xab04,
  CLEAR_QUE: 0xab05,
  PRINT_DEBUG: 0xab06,
  SET_SIZE_BLOCKS: 0xab07,
  DISCONNECT: 0xab08,
  SET_TIMEOUT: 0xab09,
  SET_FLAGS: 0xab0a,
} as const;

const sysfs = (index: number, file: string) => `/sys/block/nbd${index}/${file}`;

/** Whether /dev/nbdN has an owner (a DO_IT or netlink connection). */
export function deviceInUse(index: number): boolean {
  if (existsSync(sysfs(index, 'pid'))) return true;
  try {
    return Number(readFileSync(sysfs(index, 'size'), 'utf8')) > 0;
  } catch {
    return false;
  }
}

/** Indexes of every /dev/nbdN the kernel has created, ascending. */
export function listDevices(): number[] {
  let names: string[];
  try {
    names = readdirSync('/sys/block');
  } catch {
    return [];
  }
  return names
    .map((n) => /^nbd(\d+)$/.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/** Whether DO_IT has started on /dev/nbdN and the device has its capacity (`size` in bytes). */
function isLive(index: number, size: number): boolean {
  if (!existsSync(sysfs(index, 'pid'))) return false;
  try {
    // sysfs `size` counts 512-byte sectors; the kernel sets bytesize >> 9.
    return Number(readFileSync(sysfs(index, 'size'), 'utf8')) === Math.floor(size / 512);
  } catch {
    return false;
  }
}

/** A device bound through ioctls, with the worker that sits in NBD_DO_IT. */
export interface IoctlDevice {
  index: number;
  /** Settles when DO_IT returned, the worker exited and the fd was closed. */
  done: Promise<void>;
  /** NBD_DISCONNECT + NBD_CLEAR_SOCK; resolves once `done` settles. */
  disconnect(): Promise<void>;
}

export interface IoctlParams {
  index?: number;
  size: number;
  blockSize: number;
  serverFlags: number;
  timeout?: number;
  fds: readonly number[];
}

const attached = new Map<number, IoctlDevice>();

/** The ioctl-bound device this process owns at `index`, if any. */
export function ioctlDevice(index: number): IoctlDevice | undefined {
  return attached.get(index);
}

const POLL_MS = 10;
const START_TIMEOUT_MS = 20_000;

/**
 * Waits until DO_IT has the device live. nbd_start_device creates /sys/block/nbdN/pid
 * first and sets the capacity last: 6.12 freezes the queue and commits its limits in
 * between (milliseconds under load), so the device is usable only once both are there.
 * Fails if DO_IT returns early, or does not start within the limit.
 */
async function waitLive(
  index: number,
  fd: number,
  size: number,
  exited: Promise<{ ret: number; errno: number } | Error>,
  done: Promise<void>,
): Promise<void> {
  const path = `/dev/nbd${index}`;
  const started = Date.now();
  while (!isLive(index, size)) {
    const early = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), POLL_MS))]);
    if (early !== undefined) {
      await done;
      if (early instanceof Error) throw early;
      throw NbdSystemError.fromErrno(early.errno || 5, `${path}: NBD_DO_IT`);
    }
    if (Date.now() - started > START_TIMEOUT_MS) {
      ioctlInt(fd, NbdIoctl.CLEAR_SOCK, 0, 'NBD_CLEAR_SOCK');
      await done;
      throw new NbdSystemError(`${path}: NBD_DO_IT did not start within ${START_TIMEOUT_MS} ms`, 'ETIMEDOUT');
    }
  }
}

/** Binds the sockets to /dev/nbdN (a free one unless `index` is given) and starts DO_IT. */
export async function ioctlConnect(p: IoctlParams, signal?: AbortSignal): Promise<IoctlDevice> {
  const candidates = p.index !== undefined ? [p.index] : listDevices().filter((i) => !deviceInUse(i));
  if (p.index === undefined && candidates.length === 0) {
    const any = listDevices().length > 0;
    throw new NbdSystemError(
      any ? 'no free /dev/nbdN: every device is in use (modprobe nbd nbds_max=N for more)' : 'no /dev/nbdN devices: modprobe nbd',
      any ? 'EBUSY' : 'ENOENT',
    );
  }
  let last: unknown;
  for (const index of candidates) {
    signal?.throwIfAborted();
    try {
      return await bind(index, p);
    } catch (err) {
      last = err;
      // Lost a race for a free device: try the next one.
      if (p.index !== undefined || !(err instanceof NbdSystemError) || err.errnoName !== 'EBUSY') throw err;
    }
  }
  throw last;
}

async function bind(index: number, p: IoctlParams): Promise<IoctlDevice> {
  const path = `/dev/nbd${index}`;
  let fd: number;
  try {
    fd = openRdwr(path);
  } catch (err) {
    if (err instanceof NbdSystemError && err.errnoName === 'ENOENT') {
      throw new NbdSystemError(`${path} does not exist: modprobe nbd (nbds_max=N for more devices)`, 'ENOENT', 2);
    }
    throw err;
  }
  try {
    ioctlInt(fd, NbdIoctl.SET_BLKSIZE, p.blockSize, `${path}: NBD_SET_BLKSIZE ${p.blockSize}`);
    ioctlInt(fd, NbdIoctl.SET_SIZE, p.size, `${path}: NBD_SET_SIZE ${p.size}`);
    // Without the transmission flags the kernel never sends FLUSH/TRIM and ignores READ_ONLY.
    ioctlInt(fd, NbdIoctl.SET_FLAGS, p.serverFlags, `${path}: NBD_SET_FLAGS`);
    if (p.timeout !== undefined) ioctlInt(fd, NbdIoctl.SET_TIMEOUT, p.timeout, `${path}: NBD_SET_TIMEOUT`);
    for (const s of p.fds) ioctlInt(fd, NbdIoctl.SET_SOCK, s, `${path}: NBD_SET_SOCK`);
  } catch (err) {
    try {
      ioctlInt(fd, NbdIoctl.CLEAR_SOCK, 0, 'NBD_CLEAR_SOCK');
    } catch {
      // best effort: the error that matters is the one above
    }
    closeFd(fd);
    throw err;
  }

  const exited = Promise.withResolvers<{ ret: number; errno: number } | Error>();
  const worker = new Worker(new URL('./do-it.worker.js', import.meta.url), { workerData: { fd } });
  let result: { ret: number; errno: number } | Error = new Error('NBD_DO_IT worker exited without a result');
  worker.on('message', (m: { ret: number; errno: number }) => (result = m));
  worker.on('error', (e) => (result = e));
  worker.on('exit', () => exited.resolve(result));

  let closed = false;
  const cleanup = () => {
    if (closed) return;
    closed = true;
    try {
      ioctlInt(fd, NbdIoctl.CLEAR_SOCK, 0, 'NBD_CLEAR_SOCK');
    } catch {
      // already cleared by DO_IT's own teardown
    }
    closeFd(fd);
    attached.delete(index);
  };
  const done = exited.promise.then(cleanup);

  await waitLive(index, fd, p.size, exited.promise, done);

  const dev: IoctlDevice = {
    index,
    done,
    async disconnect() {
      if (!closed) {
        try {
          ioctlInt(fd, NbdIoctl.DISCONNECT, 0, `${path}: NBD_DISCONNECT`);
        } catch {
          // already disconnecting
        }
        // CLEAR_SOCK shuts the sockets down, so DO_IT returns even if the server never closes.
        try {
          ioctlInt(fd, NbdIoctl.CLEAR_SOCK, 0, `${path}: NBD_CLEAR_SOCK`);
        } catch {
          // DO_IT may have torn down already
        }
      }
      await done;
    },
  };
  attached.set(index, dev);
  return dev;
}

/** Disconnects a device bound by another process (like `nbd-client -d`). */
export function ioctlDisconnectForeign(index: number): void {
  const path = `/dev/nbd${index}`;
  const fd = openRdwr(path);
  try {
    ioctlInt(fd, NbdIoctl.DISCONNECT, 0, `${path}: NBD_DISCONNECT`);
    ioctlInt(fd, NbdIoctl.CLEAR_SOCK, 0, `${path}: NBD_CLEAR_SOCK`);
  } finally {
    closeFd(fd);
  }
}
