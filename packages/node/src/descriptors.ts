// File descriptors under Node sockets: reading one, duplicating one for another
// thread, wrapping one in a socket, and socketpairs. Only this module (and
// fast-read.ts) reaches into a socket's `_handle`.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { closeFd, dupFd, socketpairFds } from './ffi.js';
import { NbdSystemError } from './system-error.js';

/** Whether `socket` is a net.Socket with a descriptor of its own (not TLS, not in-memory). */
export function hasDescriptor(socket: Duplex): boolean {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0;
}

/** The descriptor under a net.Socket; throws for streams that have none (TLS, in-memory). */
export function fdOf(socket: Duplex): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new NbdSystemError('this stream has no file descriptor (only unix and TCP sockets have one)', 'EBADF');
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
