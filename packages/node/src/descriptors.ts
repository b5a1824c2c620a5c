// File descriptors under Node sockets: reading one, duplicating one for another
// thread, wrapping one in a socket, and socketpairs. Only this module (and
// fast-read.ts) reaches into a socket's `_handle`.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { closeFd, dupFd, socketpairFds } from './ffi.js';
import { NbdSystemError } from './system-error.js';

/** Whether `socket` is a net.Socket with a descriptor of its own (not TLS, not in-memory). */
export function hasDescriptor(socket: Duplex): boolean {
  return plainFd(socket) !== undefined;
}

/**
 * The descriptor of a plain unix or TCP socket. A TLS socket's handle reports the
 * descriptor under it too, but the bytes there are encrypted: it has none of its own.
 */
function plainFd(socket: Duplex): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number; constructor?: { name?: string } } | null })._handle;
  const kind = handle?.constructor?.name;
  if (kind !== 'Pipe' && kind !== 'TCP') return undefined;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** The descriptor under a net.Socket; throws for streams that have none (TLS, in-memory). */
export function fdOf(socket: Duplex): number {
  const fd = plainFd(socket);
  if (fd === undefined) {
    throw new NbdSystemError('this stream has no file descriptor of its own (only plain unix and TCP sockets have one; not TLS)', 'EBADF');
  }
  return fd;
}

/**
 * A descriptor for `socket`'s connection that outlives `socket`, which is
 * destroyed: Node cannot move a socket between threads, but a descriptor is
 * process-wide. The receiver owns it (`socketFromFd`). Linux only (koffi).
 */
export function takeDescriptor(socket: Socket): number {
  let fd: number;
  try {
    fd = dupFd(fdOf(socket));
  } finally {
    socket.destroy();
  }
  return fd;
}

/** A net.Socket over a descriptor this process owns (closed with the socket). */
export function socketFromFd(fd: number): Socket {
  return new Socket({ fd, readable: true, writable: true });
}

/** A connected pair of unix stream sockets, each a net.Socket. Linux only (koffi). */
export function socketPair(): [Socket, Socket] {
  const [a, b] = socketpairFds();
  let first: Socket;
  try {
    first = socketFromFd(a);
  } catch (err) {
    closeFd(a);
    closeFd(b);
    throw err;
  }
  try {
    return [first, socketFromFd(b)];
  } catch (err) {
    first.destroy();
    closeFd(b);
    throw err;
  }
}
