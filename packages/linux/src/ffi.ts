// The only file of @nbd/linux that loads koffi, and only on first use: importing @nbd/linux on
// macOS or Windows must not throw; calling into the kernel there may.
import { createRequire } from 'node:module';
import { NbdLinuxError } from './errors.js';

type Fn = (...args: unknown[]) => number;
interface PollHandle {
  stop(): void;
  close(): void;
  unref(): void;
}
interface Koffi {
  load(path: string): { func(decl: string): Fn };
  errno(): number;
  node: { poll(fd: number, opts: { readable?: boolean }, cb: (ev: unknown) => void): PollHandle };
}

export interface Libc {
  socket: Fn;
  socketpair: Fn;
  send: Fn;
  recv: Fn;
  close: Fn;
  ioctl: Fn;
  open: Fn;
  setsockopt: Fn;
  getpid: Fn;
}

let loaded: { koffi: Koffi; libc: Libc } | undefined;

/** Whether koffi has been loaded in this thread (tests check imports stay lazy). */
export function ffiLoaded(): boolean {
  return loaded !== undefined;
}

function ffi(): { koffi: Koffi; libc: Libc } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    throw new NbdLinuxError(`@nbd/linux drives the Linux kernel NBD client; this is ${process.platform}`, 'ENOSYS');
  }
  const koffi = createRequire(import.meta.url)('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');
  const libc: Libc = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
    send: lib.func('long send(int fd, const uint8_t *buf, size_t len, int flags)'),
    recv: lib.func('long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
    close: lib.func('int close(int fd)'),
    // Variadic: callers pass the type of the third argument explicitly.
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    open: lib.func('int open(const char *path, int flags)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
    getpid: lib.func('int getpid()'),
  };
  loaded = { koffi, libc };
  return loaded;
}

/** libc, loading koffi on first use. */
export function libc(): Libc {
  return ffi().libc;
}

/** errno of the last failed libc call on this thread. */
export function errno(): number {
  return ffi().koffi.errno();
}

/** Throws an NbdLinuxError for a libc call that returned -1. */
export function check(ret: number, what: string): number {
  if (ret < 0) throw NbdLinuxError.fromErrno(errno(), what);
  return ret;
}

/** Watches an fd for readability on the event loop (libuv poll, no thread). */
export function pollReadable(fd: number, onReadable: () => void): PollHandle {
  // koffi 3.3.4 passes a bare event mask here, not the typed object: any event
  // means "try to read" (the reader stops at EAGAIN anyway).
  return ffi().koffi.node.poll(fd, { readable: true }, () => onReadable());
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOCK_NONBLOCK = 0o4000;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;

/** A connected pair of unix stream sockets (close-on-exec), as raw fds. */
export function socketpair(): [number, number] {
  const sv = [0, 0];
  check(libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 'socketpair');
  return [sv[0] as number, sv[1] as number];
}

export function closeFd(fd: number): void {
  libc().close(fd);
}

/** ioctl with an integer argument (all NBD ioctls take one or none). */
export function ioctlInt(fd: number, request: number, arg: number | bigint, what: string): number {
  return check(libc().ioctl(fd, request, 'unsigned long', BigInt(arg)), what);
}

export function openDevice(path: string): number {
  return check(libc().open(path, O_RDWR | O_CLOEXEC), `open ${path}`);
}
