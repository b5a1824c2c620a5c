// A Device as /dev/nbdN inside this process: per connection a socketpair, our
// server's transmission phase on one end (no handshake: we tell the kernel the size
// and flags ourselves), the other end's fd to the kernel. Everything the kernel
// asks of the device is served on this event loop, so I/O on /dev/nbdN from this
// thread must be async (see README).
import { open } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { socketPair } from '@nbd/node';
import { NbdInvalidArgumentError, throwIfAborted, tieToSignal } from '@nbd/protocol';
import { type Device, type Export, serveTransmission, transmissionFlagsOf } from '@nbd/server';
import { type ConfigureOptions, configure, disconnect, status } from './configure.js';

/** Options of {@link loopback}. */
export interface LoopbackOptions {
  /** Connections (default 1); more than one needs `device.multiConn`. */
  connections?: number;
  /** Logical block size for the kernel (default 512, or the device's minimum). */
  blockSize?: number;
  /** Export read-only: the kernel marks /dev/nbdN read-only. */
  readOnly?: boolean;
  /** How to reach the kernel: 'netlink' or 'ioctl'; default netlink, ioctl when the netlink family is missing. */
  mode?: ConfigureOptions['mode'];
  /** Device index; default: any free one. */
  index?: number;
  /** Request timeout in seconds, passed to the kernel. */
  timeout?: number;
  /** Flushes, disconnects and stops serving when aborted. */
  signal?: AbortSignal;
}

/** A device served to the kernel as /dev/nbdN by this process (see {@link loopback}). */
export interface Loopback {
  /** N of /dev/nbdN. */
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
  throwIfAborted(opts.signal, 'loopback');
  const n = opts.connections ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new NbdInvalidArgumentError(`loopback: connections must be a positive integer, not ${n}`);
  if (n > 1 && !device.multiConn) {
    throw new NbdInvalidArgumentError(`loopback: ${n} connections need a device with multiConn (the kernel refuses them otherwise)`);
  }
  const exp: Export = { name: '', size, device, readOnly: opts.readOnly ?? false };
  const flags = transmissionFlagsOf(exp);
  const stopServers = new AbortController();
  const serving: Promise<void>[] = [];
  const kernelEnds: Socket[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const [ours, kernels] = socketPair();
      kernelEnds.push(kernels);
      serving.push(serveTransmission(ours, exp, { signal: stopServers.signal }));
    }
    const index = await configure(
      // The block size defaults to the device's minimum (at least 512), as a handshake would have told.
      kernelEnds.map((socket) => ({ socket, size, flags, ...(device.blockSizes ? { blockSize: device.blockSizes.min } : {}) })),
      {
        backend: 'nbd-loopback',
        ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
        ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
        ...(opts.index !== undefined ? { index: opts.index } : {}),
        ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
        ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
      },
    );
    return running(index, device, serving, stopServers, opts.signal);
  } catch (err) {
    stopServers.abort();
    for (const s of kernelEnds) s.destroy();
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
  const aborted = Promise.withResolvers<void>();
  const untie = tieToSignal(signal, () => close().then(aborted.resolve, aborted.reject));
  void ended.then(untie);
  const closed = Promise.race([ended, aborted.promise]).then(async () => {
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
