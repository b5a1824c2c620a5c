// The fast read path: the kernel reads straight into our arenas, up to 1 MiB per
// read, instead of Node allocating a fresh buffer per 64 KiB read. This is Node's
// user-buffer mode of net.Socket (what `new net.Socket({ onread })` sets up), turned
// on for a socket that already exists through its private `kBuffer`, `kBufferCb` and
// `kBufferGen` symbols and `_handle.useUserBuffer`. They exist on Node 20 to 26. If a
// release renames them, reading falls back to copying 'data' chunks (slower, still
// correct), and we say so once on the `@nbd/node:fast-read` diagnostics channel and
// as a process warning.
import { channel } from 'node:diagnostics_channel';
import type { Duplex } from 'node:stream';

/**
 * For every plain TCP or unix socket that starts reading for a transmission phase:
 * `{ direct: true }` when it reads straight into our buffers, `{ direct: false, reason }`
 * when this Node lacks the internals (then also a process warning, once).
 */
export const fastReadChannel = channel('@nbd/node:fast-read');

interface Hooks {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

interface UserBufferHandle {
  useUserBuffer(buf: Uint8Array): void;
  readStop?(): number;
  readStart?(): number;
  /** net.Socket's own note of whether the handle reads. */
  reading?: boolean;
  constructor: { name: string };
}

let told = false;

function tell(reason: string): void {
  if (fastReadChannel.hasSubscribers) fastReadChannel.publish({ direct: false, reason });
  if (told) return;
  told = true;
  const message = `@nbd/node: fast socket reads are unavailable on Node ${process.version} (${reason}); reads are copied instead`;
  process.emitWarning(message, { code: 'NBD_FAST_READ_UNAVAILABLE' });
}

function handleOf(socket: Duplex): UserBufferHandle | undefined {
  return (socket as unknown as { _handle?: UserBufferHandle | null })._handle ?? undefined;
}

/** The socket's hooks, or undefined if it is not a plain TCP/unix socket or this Node lacks them. */
function hooksOf(socket: Duplex): Hooks | undefined {
  const handle = handleOf(socket);
  const kind = handle?.constructor?.name;
  // Plain unix/TCP sockets only: a TLS socket's handle decrypts in between (it copies, by design).
  if (kind !== 'Pipe' && kind !== 'TCP') return undefined;
  if (typeof handle?.useUserBuffer !== 'function') {
    tell('net.Socket handles have no useUserBuffer()');
    return undefined;
  }
  const find = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  if (buffer === undefined || callback === undefined || generator === undefined) {
    tell('net.Socket has no kBuffer/kBufferCb/kBufferGen symbols');
    return undefined;
  }
  return { buffer, callback, generator };
}

/** A socket reading into buffers we choose. */
export interface DirectReads {
  /** The next-read buffer changed: install `next()` now. */
  rebuffer(): void;
}

/**
 * Turns on direct reads for `socket`: after each read of `n` bytes, `filled(n)` runs
 * (false pauses the socket), then `next()` gives the buffer for the following read.
 * Undefined when the socket cannot (a TLS socket, any other stream, or a Node
 * without these internals): the caller copies 'data' chunks instead.
 */
export function directReads(socket: Duplex, next: () => Uint8Array, filled: (n: number) => boolean): DirectReads | undefined {
  const hooks = hooksOf(socket);
  const handle = handleOf(socket);
  if (hooks === undefined || handle === undefined) return undefined;
  const s = socket as unknown as Record<symbol, unknown>;
  const install = () => {
    const b = next();
    s[hooks.buffer] = b;
    handle.useUserBuffer(b);
  };
  s[hooks.generator] = next;
  s[hooks.callback] = (n: number) => filled(n);
  install();
  if (fastReadChannel.hasSubscribers) fastReadChannel.publish({ direct: true });
  // In user-buffer mode pausing stops the handle itself: bytes wait in the kernel.
  socket.pause();
  return { rebuffer: install };
}

/**
 * Stops the socket's handle from reading at all (before its descriptor goes to the
 * kernel, which must see every byte). Pausing a stream is not enough: libuv may
 * still read into the stream's buffer. Throws if the handle cannot stop.
 */
export function stopReading(socket: Duplex): void {
  socket.pause();
  const handle = handleOf(socket);
  if (handle === undefined) return; // no handle: nothing reads
  if (typeof handle.readStop !== 'function') {
    throw new Error('this socket handle has no readStop(): cannot stop reading before handing its descriptor over');
  }
  handle.readStop();
  handle.reading = false; // net.Socket's own note, kept true
}

/**
 * Undoes stopReading: the handle reads again (a TLS socket detached for the kernel
 * stays in this process, pumped). resume() alone cannot: the stream is flowing
 * already, so it never asks the handle again.
 */
export function resumeReading(socket: Duplex): void {
  const handle = handleOf(socket);
  if (handle === undefined || handle.reading !== false || typeof handle.readStart !== 'function') return;
  handle.reading = true;
  handle.readStart();
}
