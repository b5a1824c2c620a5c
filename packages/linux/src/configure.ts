// Hands connections in the transmission phase to the kernel NBD client: netlink
// first (CONNECT returns at once, the kernel owns the sockets), ioctls as fallback.
// Also disconnect, status, and a supervisor that reconnects dead links.

import { existsSync, readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { fdOf, hasDescriptor, NbdSystemError } from '@nbd/node';
import { isPowerOfTwo, NbdInvalidArgumentError, TransmissionFlag, throwIfAborted, tieToSignal } from '@nbd/protocol';
import { ioctlConnect, ioctlDevice, ioctlDisconnectForeign, listDevices } from './ioctl.js';
import { type DeviceStatus, NbdNetlink } from './netlink.js';
import { KernelClientFlag } from './netlink-codec.js';
import { pumpFor } from './pump.js';

/** What `@nbd/client`'s `Connection` offers for the hand-over (structural, no import). */
export interface DetachableConnection {
  /** The export as negotiated: size in bytes, transmission flags, and the server's minimum block size if it sent one. */
  readonly info: { size: number; flags: number; blockSizes?: { min: number } };
  /** Stops using the socket (nothing read past the handshake) and hands it over. */
  detach(): { socket: Duplex };
}

/** A socket (or raw fd) already in the transmission phase, with what the handshake said. */
export interface RawConnection {
  /** The connected socket (give this or `fd`); `configure` closes our copy once the kernel holds it. */
  socket?: Duplex;
  /** A connected socket's descriptor (give this or `socket`); it stays the caller's to close. */
  fd?: number;
  /** The export's size in bytes. */
  size: number;
  /** Transmission flags (`TransmissionFlag`). */
  flags: number;
  /** The server's minimum block size (NBD_INFO_BLOCK_SIZE): the kernel's default logical block size, at least 512. */
  blockSize?: number;
}

/** One connection to hand to the kernel: a `@nbd/client` Connection after `go()`, or a socket or fd with what its handshake said. */
export type ConnectionInput = DetachableConnection | RawConnection;

/** Options of {@link configure}: which /dev/nbdN, how to reach the kernel, and the kernel's timeouts (in seconds). */
export interface ConfigureOptions {
  /** Device to use; default: the kernel (netlink) or a free-device scan (ioctl) picks one. */
  index?: number;
  /** Default: netlink, or ioctl when the netlink family is missing. */
  mode?: 'netlink' | 'ioctl';
  /** Seconds before a request times out (and, with several or reconnectable links, is retried). */
  timeout?: number;
  /** Seconds the kernel holds I/O while every link is dead, waiting for RECONFIGURE (netlink only). */
  deadConnTimeout?: number;
  /** Logical block size, 512..page size, power of 2. Default: the server's minimum, at least 512. */
  blockSize?: number;
  /** Disconnect when the last opener closes /dev/nbdN (netlink only). */
  disconnectOnClose?: boolean;
  /** Remove the device once disconnected (netlink only). */
  destroyOnDisconnect?: boolean;
  /** Shown in /sys/block/nbdN/backend (netlink only; ignored with ioctls). */
  backend?: string;
  /** Checked before anything is handed to the kernel. */
  signal?: AbortSignal;
}

interface Prepared {
  fds: number[];
  /** Our copies of what the kernel gets: closed once it holds its own references. */
  sockets: Duplex[];
  /** Connections pumped to the kernel (TLS): they live on with the device; closed only if configuring fails. */
  pumped: Duplex[];
  size: number;
  flags: number;
  blockSize: number;
}

const isDetachable = (c: ConnectionInput): c is DetachableConnection => typeof (c as DetachableConnection).detach === 'function';

/**
 * Checks every connection (one export, consistent flags, multi-conn only if advertised,
 * a valid block size), and only then detaches them. A refusal leaves every Connection
 * as it was; if a detach fails, the sockets already detached are closed. A connection
 * without a descriptor of its own (TLS) reaches the kernel through a pump (pump.ts).
 */
export function prepare(input: ConnectionInput | readonly ConnectionInput[], blockSize?: number): Prepared {
  const list = Array.isArray(input) ? (input as readonly ConnectionInput[]) : [input as ConnectionInput];
  if (list.length === 0) throw new NbdInvalidArgumentError('configure: no connections given');
  const described = list.map((c) =>
    isDetachable(c)
      ? { size: c.info.size, flags: c.info.flags, blockSize: c.info.blockSizes?.min }
      : { size: c.size, flags: c.flags, blockSize: c.blockSize },
  );
  const first = described[0]!;
  if (described.some((d) => d.size !== first.size || d.flags !== first.flags)) {
    throw new NbdInvalidArgumentError('configure: the connections disagree on size or flags; they must all be to the same export');
  }
  if (!Number.isSafeInteger(first.size) || first.size < 0) throw new NbdInvalidArgumentError(`configure: bad export size ${first.size}`);
  if (list.length > 1 && !(first.flags & TransmissionFlag.CAN_MULTI_CONN)) {
    throw new NbdInvalidArgumentError(
      `configure: ${list.length} connections, but the export does not advertise CAN_MULTI_CONN; the kernel would refuse them (use one connection)`,
    );
  }
  const bs = blockSize ?? Math.max(512, first.blockSize ?? 512);
  if (!isPowerOfTwo(bs) || bs < 512 || bs > 65536) {
    throw new NbdInvalidArgumentError(`configure: block size ${bs} must be a power of 2 from 512 to the page size`);
  }
  const sockets: Duplex[] = [];
  const pumped: Duplex[] = [];
  const fds: number[] = [];
  try {
    for (const c of list) {
      let socket = isDetachable(c) ? c.detach().socket : c.socket;
      if (socket && !hasDescriptor(socket)) {
        pumped.push(socket);
        socket = pumpFor(socket).kernelEnd;
      }
      if (socket) sockets.push(socket);
      fds.push(socket ? fdOf(socket) : (c as RawConnection).fd!);
    }
  } catch (err) {
    release(sockets, pumped);
    throw err;
  }
  return { fds, sockets, pumped, size: first.size, flags: first.flags, blockSize: bs };
}

/** Our copies of the sockets go once the kernel holds its own references. */
function release(sockets: readonly Duplex[], failed?: readonly Duplex[]): void {
  for (const s of sockets) s.destroy();
  for (const s of failed ?? []) s.destroy();
}

async function openNetlinkOrNull(mode: ConfigureOptions['mode']): Promise<NbdNetlink | null> {
  if (mode === 'ioctl') return null;
  try {
    return await NbdNetlink.open();
  } catch (err) {
    // No netlink family: fall back to ioctls unless netlink was asked for.
    if (mode === undefined && err instanceof NbdSystemError && err.errnoName === 'ENOENT' && listDevices().length > 0) return null;
    throw err;
  }
}

/**
 * Gives the kernel the connections (all to one export, in the transmission phase)
 * and resolves with the index of /dev/nbdN. Sockets of `Connection`s and `{ socket }`
 * entries are closed here once the kernel holds them; `{ fd }` entries stay the caller's.
 * A TLS connection stays open in this process, pumped to the kernel through a
 * socketpair, for as long as the device uses it: keep the process running.
 */
export async function configure(connections: ConnectionInput | readonly ConnectionInput[], opts: ConfigureOptions = {}): Promise<number> {
  throwIfAborted(opts.signal, 'configure');
  const p = prepare(connections, opts.blockSize);
  try {
    const index = await attach(p, opts);
    release(p.sockets);
    return index;
  } catch (err) {
    release(p.sockets, p.pumped);
    throw err;
  }
}

/** Gives the prepared descriptors to the kernel: netlink CONNECT, or the ioctls and a DO_IT thread. */
async function attach(p: Prepared, opts: ConfigureOptions): Promise<number> {
  const nl = await openNetlinkOrNull(opts.mode);
  if (!nl) {
    if (opts.disconnectOnClose || opts.destroyOnDisconnect || opts.deadConnTimeout !== undefined) {
      // Silently dropping these would change behaviour the caller relies on (`backend` is cosmetic).
      throw new NbdInvalidArgumentError('configure: disconnectOnClose, destroyOnDisconnect and deadConnTimeout need netlink');
    }
    const dev = await ioctlConnect(
      {
        size: p.size,
        blockSize: p.blockSize,
        serverFlags: p.flags,
        fds: p.fds,
        ...(opts.index !== undefined ? { index: opts.index } : {}),
        ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
      },
      opts.signal,
    );
    return dev.index;
  }
  try {
    const clientFlags =
      (opts.disconnectOnClose ? KernelClientFlag.DISCONNECT_ON_CLOSE : 0) |
      (opts.destroyOnDisconnect ? KernelClientFlag.DESTROY_ON_DISCONNECT : 0);
    return await nl.connect({
      size: p.size,
      blockSize: p.blockSize,
      serverFlags: p.flags,
      clientFlags,
      fds: p.fds,
      ...(opts.index !== undefined ? { index: opts.index } : {}),
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
      ...(opts.deadConnTimeout !== undefined ? { deadConnTimeout: opts.deadConnTimeout } : {}),
      ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
    });
  } finally {
    nl.close();
  }
}

/** Disconnects /dev/nbdN (whoever bound it) and, for our ioctl devices, waits for DO_IT to return. */
export async function disconnect(index: number, opts: { signal?: AbortSignal } = {}): Promise<void> {
  throwIfAborted(opts.signal);
  const own = ioctlDevice(index);
  if (own) return own.disconnect();
  let nl: NbdNetlink | null = null;
  try {
    nl = await NbdNetlink.open();
  } catch (err) {
    if (!(err instanceof NbdSystemError && err.errnoName === 'ENOENT')) throw err;
  }
  if (!nl) return ioctlDisconnectForeign(index);
  try {
    await nl.disconnect(index);
  } catch (err) {
    // A device bound through ioctls by another process refuses netlink control.
    if (err instanceof NbdSystemError && err.errnoName === 'EINVAL' && existsSync(`/sys/block/nbd${index}/pid`))
      return ioctlDisconnectForeign(index);
    throw err;
  } finally {
    nl.close();
  }
}

/** Which devices exist and which are connected (netlink STATUS; sysfs without netlink). */
export async function status(index?: number, opts: { signal?: AbortSignal } = {}): Promise<DeviceStatus[]> {
  throwIfAborted(opts.signal);
  let nl: NbdNetlink | null = null;
  try {
    nl = await NbdNetlink.open();
  } catch (err) {
    if (!(err instanceof NbdSystemError && err.errnoName === 'ENOENT') || listDevices().length === 0) throw err;
  }
  if (!nl) {
    const all = listDevices().map((i) => ({ index: i, connected: existsSync(`/sys/block/nbd${i}/pid`) }));
    return index === undefined ? all : all.filter((d) => d.index === index);
  }
  try {
    return await nl.status(index);
  } finally {
    nl.close();
  }
}

/** Options of {@link supervise}. */
export interface SuperviseOptions {
  /** RECONFIGUREd at start: seconds the kernel holds I/O while we reconnect. */
  deadConnTimeout?: number;
  /**
   * The backend identifier given to `configure` (sent with every RECONFIGURE, which the kernel
   * requires once one was set). Default: the device's own, read from /sys/block/nbdN/backend.
   */
  backend?: string;
  /** Milliseconds between failed reconnect attempts (default 200). */
  retryDelay?: number;
  /** Told about every reconnect (err set when an attempt failed). */
  onReconnect?: (err?: unknown) => void;
  /** Aborting it stops the supervisor, as `close()` does (the device stays as it is). */
  signal?: AbortSignal;
}

/** A running supervisor. */
export interface Supervisor {
  /** Successful reconnects so far. */
  readonly reconnects: number;
  /** Stops watching (the device stays as it is). */
  close(): void;
}

/** The backend identifier /dev/nbdN was connected with (netlink), from sysfs; undefined when it has none. */
export function backendOf(index: number, sysfs = '/sys'): string | undefined {
  try {
    const text = readFileSync(`${sysfs}/block/nbd${index}/backend`, 'utf8').replace(/\n$/, '');
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

/**
 * Watches LINK_DEAD for /dev/nbdN (netlink-bound) and, when a link dies, calls
 * `reconnect` for fresh connections and RECONFIGUREs them in, so I/O held by the
 * kernel (see `deadConnTimeout`) resumes. Stops on `close()` or `signal`.
 */
export async function supervise(
  index: number,
  reconnect: () => Promise<ConnectionInput[]>,
  opts: SuperviseOptions = {},
): Promise<Supervisor> {
  throwIfAborted(opts.signal);
  const nl = await NbdNetlink.open();
  let count = 0;
  let stopped = false;
  let running: Promise<void> | null = null;
  let again = false;
  const retryDelay = opts.retryDelay ?? 200;
  const backend = opts.backend ?? backendOf(index);

  const attempt = async (): Promise<void> => {
    while (!stopped) {
      let p: Prepared | undefined;
      let ok = false;
      try {
        p = prepare(await reconnect());
        await nl.reconfigure(index, backend !== undefined ? { fds: p.fds, backend } : { fds: p.fds });
        ok = true;
        count++;
        opts.onReconnect?.();
        return;
      } catch (err) {
        // No dead socket left to replace: an earlier attempt already repaired the device.
        if (err instanceof NbdSystemError && err.errnoName === 'ENOSPC') return;
        opts.onReconnect?.(err);
        await new Promise((r) => setTimeout(r, retryDelay));
      } finally {
        if (p) release(p.sockets, ok ? undefined : p.pumped);
      }
    }
  };
  const kick = () => {
    if (stopped) return;
    if (running) {
      again = true; // another link died while we were busy
      return;
    }
    running = attempt().finally(() => {
      running = null;
      if (again) {
        again = false;
        kick();
      }
    });
  };

  try {
    if (opts.deadConnTimeout !== undefined) {
      await nl.reconfigure(
        index,
        backend !== undefined ? { deadConnTimeout: opts.deadConnTimeout, backend } : { deadConnTimeout: opts.deadConnTimeout },
      );
    }
    nl.watchLinkDead((i) => {
      if (i === index) kick();
    });
  } catch (err) {
    nl.close();
    throw err;
  }
  let untie = (): void => {};
  const close = () => {
    stopped = true;
    nl.close();
    untie();
  };
  untie = tieToSignal(opts.signal, close);
  return {
    get reconnects() {
      return count;
    },
    close,
  };
}
