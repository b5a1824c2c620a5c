// What a server serves: the Device interface (the breadth of nbdkit's plugin
// callbacks) and the Export that names one. Built-in devices live in
// memory-device.ts and shared-memory-device.ts; files, sources and filters in @nbd/devices.
import type { BlockSizes, MaybePromise } from '@nbd/protocol';

/** Options every device call receives. */
export interface IoOptions {
  /** Force Unit Access: the data must be durable before the call resolves (only when `fua` is native). */
  fua: boolean;
  /** Aborted when the connection or the server shuts down. */
  signal: AbortSignal;
}

/** Options of {@link Device.zero}. */
export interface ZeroOptions extends IoOptions {
  /** The client asked that the range stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  noHole: boolean;
  /** Fail with ENOTSUP unless zeroing is faster than writing zeroes (NBD_CMD_FLAG_FAST_ZERO). */
  fast: boolean;
}

/** Options of {@link Device.extents}. */
export interface ExtentsOptions extends IoOptions {
  /** Only the first extent is needed (NBD_CMD_FLAG_REQ_ONE). */
  reqOne: boolean;
}

/**
 * One run of bytes with the same allocation state. Extents are contiguous from
 * the requested offset. `flags` is a combination of `AllocationState.HOLE` and
 * `AllocationState.ZERO` (0 = allocated data).
 */
export interface DeviceExtent {
  /** Bytes in this run; a positive safe integer. */
  length: number;
  /** `AllocationState` bits (NBD_STATE_HOLE, NBD_STATE_ZERO): 0 means allocated data. */
  flags: number;
}

/** Memory lent by {@link Device.lend}. */
export interface Loan {
  /** The bytes asked for, in order; their lengths must add up to the requested length exactly (else the READ fails). */
  views: Uint8Array[];
  /** Called once, when the socket no longer needs the views: the device may reuse that memory from then on. */
  release(): void;
}

/**
 * How a worker thread opens its own handle on a device (`ServeOptions.threads`):
 * it imports `module` and calls the `openDevice(args)` that module exports.
 * `args` goes through structuredClone: SharedArrayBuffers in it are shared, not copied.
 */
export interface DeviceRecipe {
  /** What the worker passes to `import()`: an absolute file: URL or a package specifier (a device module gives `import.meta.url`). */
  module: string;
  /** The argument of that module's `openDevice(args)`; it must survive structuredClone. */
  args: unknown;
}

/** A value or a promise of it: device methods may be synchronous. */
export type { MaybePromise } from '@nbd/protocol';

/**
 * A block device served over NBD. Only `readAt` is required; every optional
 * method turns on the matching transmission flag. Throw an `NbdError` to choose
 * the errno of the reply; a Node error maps by its code (`ENOSPC`, `EROFS`, …);
 * anything else is EIO.
 */
export interface Device {
  /** Fills all of `buf` with the bytes at `offset`. */
  readAt(buf: Uint8Array, offset: number, opts: IoOptions): MaybePromise<void>;
  /**
   * Zero-copy READ, optional next to `readAt`: views of the device's own memory
   * holding the `length` bytes at `offset`, in order, or undefined to fall back
   * to `readAt`. The server sends the views as they are and calls `release()`
   * once the socket is done with them; until then that memory must not be reused
   * for other offsets (writes to these same offsets may race with the read, as
   * the protocol allows for overlapping requests).
   */
  lend?(offset: number, length: number): Loan | undefined;
  /** Writes all of `buf` at `offset`. Without it the device is read-only. `buf` is a view into the connection's read buffer, reused once the call returns (or its promise settles): copy it if kept. */
  writeAt?(buf: Uint8Array, offset: number, opts: IoOptions): MaybePromise<void>;
  /** Makes completed writes durable (NBD_CMD_FLUSH; also FUA emulation). */
  sync?(opts: IoOptions): MaybePromise<void>;
  /** Discards a range (contents afterwards unspecified). */
  trim?(offset: number, length: number, opts: IoOptions): MaybePromise<void>;
  /** Zeroes a range; without it the server writes zero buffers. */
  zero?(offset: number, length: number, opts: ZeroOptions): MaybePromise<void>;
  /** Prefetch hint; without it the server reads the range and drops the data. */
  cache?(offset: number, length: number, opts: IoOptions): MaybePromise<void>;
  /** Allocation map of a range (base:allocation); without it everything is reported as data. */
  extents?(offset: number, length: number, opts: ExtentsOptions): MaybePromise<DeviceExtent[]>;
  /** Size in bytes, when the device has one: an export may not be larger (checked by `serve`). */
  readonly size?: number;
  /** Refuse writes even though `writeAt` exists. */
  readonly readOnly?: boolean;
  /** Hint for the client's I/O scheduler. */
  readonly rotational?: boolean;
  /** Flush/FUA on one connection covers writes made on all of them (NBD_FLAG_CAN_MULTI_CONN). */
  readonly multiConn?: boolean;
  /** `writeAt`/`zero`/`trim` honour `opts.fua` natively; otherwise the server calls `sync` after them. */
  readonly fua?: boolean;
  /** Alignment and payload constraints, advertised through NBD_INFO_BLOCK_SIZE. */
  readonly blockSizes?: BlockSizes;
  /** How worker threads open this same device; needed for `ServeOptions.threads`. */
  share?(): DeviceRecipe;
  /** Called when a device returned by `ServeOptions.open` is no longer used. */
  close?(): MaybePromise<void>;
}

/** A named device a client can select. */
export interface Export {
  /** The name clients ask for; the first export of a list is also the default (empty name). */
  name: string;
  /** Human-readable text for clients: sent in `NBD_OPT_LIST` replies and as `NBD_INFO_DESCRIPTION`. */
  description?: string;
  /** Size in bytes (a safe integer). */
  size: number;
  /** What serves the export's bytes (unless `ServeOptions.open` makes one per connection). */
  device: Device;
  /** Serve read-only even if the device can write. */
  readOnly?: boolean;
  /** Only over TLS (a server with `tls.mode: 'on'`): left out of LIST and refused without it. */
  tlsOnly?: boolean;
}
