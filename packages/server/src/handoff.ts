// Moving an accepted socket to a worker thread. Node cannot transfer a socket
// handle between threads, but a file descriptor is process-wide: we dup(2) it
// (through koffi, loaded on first use only), close our handle, and the worker
// wraps the copy in a net.Socket of its own.
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

type Dup = (fd: number) => number;
let dup: Dup | undefined;

function libcDup(): Dup {
  if (dup) return dup;
  let koffi: { load(path: string): { func(decl: string): Dup } };
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof koffi;
  } catch (e) {
    throw new Error(`serve: threads need the optional dependency koffi (${(e as Error).message})`);
  }
  dup = koffi.load('libc.so.6').func('int dup(int fd)');
  return dup;
}

/** Loads what handing off needs, so a missing koffi fails at start-up, not at the first client. */
export function prepareHandoff(): void {
  if (process.platform !== 'linux') throw new Error(`serve: threads are supported on Linux only, not ${process.platform}`);
  libcDup();
}

/**
 * A descriptor for `socket`'s connection that outlives `socket`, which is destroyed.
 * The receiver owns it (wrap it: `new net.Socket({ fd })`).
 */
export function takeDescriptor(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    socket.destroy();
    throw new Error('serve: the accepted socket has no file descriptor');
  }
  const copy = libcDup()(fd);
  socket.destroy();
  if (copy < 0) throw new Error('serve: dup() of the accepted socket failed');
  return copy;
}
