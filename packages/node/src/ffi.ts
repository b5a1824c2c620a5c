// The one koffi loader of the SDK: every package that calls libc (the kernel NBD
// driver's netlink and ioctls, dup for worker threads, fallocate and SEEK_HOLE for
// files) goes through here. koffi loads on first use, never on import, so importing
// works on any OS; calling in elsewhere than Linux throws a clear error.
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { NbdSystemError } from './system-error.js';

type Fn = (...args: unknown[]) => number;
type BigFn = (...args: unknown[]) => number | bigint;

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

/** The libc functions the SDK uses. */
export interface Libc {
  socket: Fn;
  socketpair: Fn;
  send: Fn;
  recv: Fn;
  close: Fn;
  dup: Fn;
  /** Variadic: pass the third argument's type before it (`'unsigned long', 5n`). */
  ioctl: Fn;
  open: Fn;
  setsockopt: Fn;
  getpid: Fn;
}

let loaded: { koffi: Koffi; lib: { func(decl: string): Fn }; libc: Libc } | undefined;

/** Whether koffi has been loaded in this thread (tests check that imports stay lazy). */
export function ffiLoaded(): boolean {
  return loaded !== undefined;
}

function ffi(): { koffi: Koffi; lib: { func(decl: string): Fn }; libc: Libc } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    throw new NbdSystemError(`this needs Linux system calls; this is ${process.platform}`, 'ENOSYS');
  }
  let koffi: Koffi;
  try {
    // By its real path: koffi finds its native package relative to its own directory, and
    // through a pnpm symlink (a loader that preserves symlinks: vitest on Node 22) that is wrong.
    const require = createRequire(import.meta.url);
    koffi = require(realpathSync(require.resolve('koffi'))) as Koffi;
  } catch (e) {
    throw new NbdSystemError(`the optional dependency koffi could not be loaded: ${(e as Error).message}`, 'ENOSYS', 0, { cause: e });
  }
  const lib = koffi.load('libc.so.6');
  const libc: Libc = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
    send: lib.func('long send(int fd, const uint8_t *buf, size_t len, int flags)'),
    recv: lib.func('long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
    close: lib.func('int close(int fd)'),
    dup: lib.func('int dup(int fd)'),
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    open: lib.func('int open(const char *path, int flags, ...)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
    getpid: lib.func('int getpid()'),
  };
  loaded = { koffi, lib, libc };
  return loaded;
}

const extra = new Map<string, BigFn>();

/**
 * Any other libc function, by its C declaration (`'int fallocate(int fd, int mode,
 * int64_t offset, int64_t len)'`), bound on first use and cached. Throws if this
 * libc lacks it, so callers can fall back.
 */
export function libcFunction(declaration: string): BigFn {
  let f = extra.get(declaration);
  if (f === undefined) {
    f = ffi().lib.func(declaration);
    extra.set(declaration, f);
  }
  return f;
}

/** libc, loading koffi on first use. */
export function libc(): Libc {
  return ffi().libc;
}

/** errno of the last failed libc call on this thread. */
export function errno(): number {
  return ffi().koffi.errno();
}

/** Throws an NbdSystemError for a libc call that returned -1. */
export function check(ret: number, what: string): number {
  if (ret < 0) throw NbdSystemError.fromErrno(errno(), what);
  return ret;
}

/**
 * Wraps a function that native code calls back (koffi's poll): its body runs as an
 * immediate, so promises it settles resume right away. Since Node 26.4 a native
 * callback no longer drains the microtask queue on return (nodejs/node#66158), so a
 * promise resolved inside one would wait for the next unrelated wake-up of the loop.
 */
export function nativeCallback<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    setImmediate(fn, ...args);
  };
}

/** Watches `fd` for readability on the event loop (libuv poll, no thread). */
export function pollReadable(fd: number, onReadable: () => void): PollHandle {
  // koffi passes a bare event mask here: any event means "try to read" (readers stop at EAGAIN).
  return ffi().koffi.node.poll(
    fd,
    { readable: true },
    nativeCallback(() => onReadable()),
  );
}

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
/** Linux `SOCK_CLOEXEC` for socket(2)'s type argument: the descriptor closes on exec. */
export const SOCK_CLOEXEC = 0o2000000;
/** Linux `SOCK_NONBLOCK` for socket(2)'s type argument: reads and writes never block (EAGAIN instead). */
export const SOCK_NONBLOCK = 0o4000;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;

/** A connected pair of unix stream sockets (close-on-exec), as raw fds. */
export function socketpairFds(): [number, number] {
  const sv = [0, 0];
  check(libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 'socketpair');
  return [sv[0] as number, sv[1] as number];
}

/** Closes a raw descriptor with libc close(2); errors are ignored (the descriptor is gone either way on Linux). */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** A second descriptor for what `fd` refers to (it outlives `fd`). */
export function dupFd(fd: number): number {
  return check(libc().dup(fd), 'dup');
}

/** ioctl with an integer argument (every NBD ioctl takes one or none). */
export function ioctlInt(fd: number, request: number, arg: number | bigint, what: string): number {
  return check(libc().ioctl(fd, request, 'unsigned long', BigInt(arg)), what);
}

/** open(2) read-write, close-on-exec. */
export function openRdwr(path: string): number {
  return check(libc().open(path, O_RDWR | O_CLOEXEC), `open ${path}`);
}
