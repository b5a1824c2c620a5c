// A Device as /dev/nbdN inside this process: per connection a socketpair, our
// server on one end, our client's handshake on the other, whose fd then goes to
// the kernel. Everything the kernel asks of the device is served on this event
// loop, so I/O on /dev/nbdN from this thread must be async (see README).
import { open } from 'node:fs/promises';
import { Socket } from 'node:net';
import { Client } from '@nbd/client';
import { type Device, serve } from '@nbd/server';
import { type ConfigureOptions, configure, disconnect, status } from './configure.js';
import { NbdLinuxError } from './errors.js';
import { closeFd, socketpair } from './ffi.js';

export interface LoopbackOptions {
  /** Connections (default 1); more than one needs `device.multiConn`. */
  connections?: number;
  /** Logical block size for the kernel (default 512, or the device's minimum). */
  blockSize?: number;
  /** Export read-only: the kernel marks /dev/nbdN read-only. */
  readOnly?: boolean;
  mode?: ConfigureOptions['mode'];
  /** Device index; default: any free one. */
  index?: number;
  /** Request timeout in seconds, passed to the kernel. */
  timeout?: number;
  /** Flushes, disconnects and stops serving when aborted. */
  signal?: AbortSignal;
}

export interface Loopback {
  index: number;
  /** `/dev/nbd<index>`. */
  path: string;
  /** Settles when the device detached and every server connection finished. */
  closed: Promise<void>;
  /** Flushes, disconnects and waits for `closed` (what aborting `signal` does). */
  close(): Promise<void>;
}

/** Grace period for the server connections to end after the kernel disconnected. */
const SERVER_DRAIN_MS = 5_000;

/** Serves `device` (of `size` bytes) to the kernel and resolves once /dev/nbdN is live. */
export async function loopback(device: Device, size: number, opts: LoopbackOptions = {}): Promise<Loopback> {
  opts.signal?.throwIfAborted();
  const n = opts.connections ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new NbdLinuxError(`loopback: connections must be a positive integer, not ${n}`, 'EINVAL');
  if (n > 1 && !device.multiConn) {
    throw new NbdLinuxError(`loopback: ${n} connections need a device with multiConn (the kernel refuses them otherwise)`, 'EINVAL');
  }
  const stopServers = new AbortController();
  const serving: Promise<void>[] = [];
  const clientSockets: Socket[] = [];
  try {
    const conns = [];
    for (let i = 0; i < n; i++) {
      const [serverFd, clientFd] = socketpair();
      let serverSock: Socket;
      try {
        serverSock = new Socket({ fd: serverFd, readable: true, writable: true });
      } catch (err) {
        closeFd(serverFd);
        closeFd(clientFd);
        throw err;
      }
      const clientSock = new Socket({ fd: clientFd, readable: true, writable: true });
      clientSockets.push(clientSock);
      serving.push(
        Promise.resolve(serve(serverSock, [{ name: '', size, device, readOnly: opts.readOnly ?? false }], { signal: stopServers.signal })).then(
          () => undefined,
        ),
      );
      const client = await Client.connect(clientSock, opts.signal ? { signal: opts.signal } : {});
      conns.push(await client.go('', { structuredReplies: false, ...(opts.signal ? { signal: opts.signal } : {}) }));
    }
    const index = await configure(conns, {
      backend: 'nbd-loopback',
      ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
      ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
      ...(opts.index !== undefined ? { index: opts.index } : {}),
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
    });
    return running(index, device, serving, stopServers, opts.signal);
  } catch (err) {
    stopServers.abort();
    for (const s of clientSockets) s.destroy();
    await Promise.allSettled(serving);
    throw err;
  }
}

function running(index: number, device: Device, serving: Promise<void>[], stopServers: AbortController, signal?: AbortSignal): Loopback {
  const path = `/dev/nbd${index}`;
  let closing: Promise<void> | null = null;
  const served = Promise.allSettled(serving);

  const close = (): Promise<void> => {
    closing ??= (async () => {
      // Dirty pages of /dev/nbdN reach the server (and FLUSH reaches the device)
      // before the link goes; fsync runs on libuv's pool, not on this thread.
      try {
        const fh = await open(path, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch {
        // already detached: nothing left to flush
      }
      await detach(index);
      await settleServers(served, stopServers);
      await device.sync?.({ fua: false, signal: new AbortController().signal });
    })();
    return closing;
  };

  // The kernel may also end it (disconnect(), nbd-client -d, a dead link).
  const ended = served.then(async () => {
    if (!closing) await detach(index).catch(() => {});
  });
  const closed = Promise.race([ended, new Promise<void>((resolve, reject) => {
    const onAbort = () => close().then(resolve, reject);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    ended.then(() => signal?.removeEventListener('abort', onAbort));
  })]).then(async () => {
    if (closing) await closing;
    const failed = (await served).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed && !stopServers.signal.aborted) throw failed.reason;
  });
  closed.catch(() => {}); // callers who never await it must not crash the process
  return { index, path, closed, close: () => close().then(() => closed) };
}

async function detach(index: number): Promise<void> {
  const s = await status(index).catch(() => []);
  if (s.length > 0 && !s.some((d) => d.connected)) return;
  await disconnect(index);
}

async function settleServers(served: Promise<unknown>, stopServers: AbortController): Promise<void> {
  const timer = setTimeout(() => stopServers.abort(), SERVER_DRAIN_MS);
  await served;
  clearTimeout(timer);
}
