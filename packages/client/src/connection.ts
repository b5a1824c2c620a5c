// The transmission phase's public face: the commands, with the caller's mistakes
// refused before anything is sent (request-checks.ts) and requests longer than the
// server's maximum payload split. The glue below it (transmission.ts) owns the
// transport, the engines and the connection's state.
import type { Duplex } from 'node:stream';
import type { TlsIdentity } from '@nbd/node';
import { CommandFlag, encodeBlockStatusPayload, type NbdError, NbdInvalidArgumentError, type Transport } from '@nbd/protocol';
import type { LentBytes } from './commands.js';
import {
  type BlockStatusOptions,
  EXPORT_HANDLE,
  type ExportHandle,
  type Signal,
  type WriteOptions,
  type ZeroOptions,
} from './export-handle.js';
import type { ExportInfo } from './export-info.js';
import type { FrameReader } from './frame-reader.js';
import type { Extent } from './reply-state.js';
import { checkBuffer, checkCan, checkRange, checkWritable, fuaFlag, type RequestLimits, requestLimits } from './request-checks.js';
import { type ConnectionState, notLent, Transmission } from './transmission.js';

/** What the handshake settled, fixed for the connection's life. */
export interface Negotiated {
  structured: boolean;
  extended: boolean;
  /** Selected metadata contexts, name → id. */
  metaContexts: Map<string, number>;
  /** Check every rule of the spec about replies (default true). */
  strict: boolean;
  /** The TLS session under the connection, if any. */
  tls?: TlsIdentity | undefined;
}

export type { ConnectionState };

/** An export on one connection in the transmission phase: many requests in flight, replies matched by cookie, out of order. */
export class Connection implements ExportHandle {
  readonly [EXPORT_HANDLE]: true = true;
  /** What the handshake told us about the export. */
  readonly info: ExportInfo;
  /** Selected metadata contexts, name → id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  /** Structured replies were negotiated (READ may come in chunks; BLOCK_STATUS is possible). */
  readonly structuredReplies: boolean;
  /** Extended headers were negotiated (32-byte requests and replies, 64-bit lengths). */
  readonly extendedHeaders: boolean;
  /** Replies are checked against every rule of the spec (the `strict` option of go()). */
  readonly strict: boolean;
  /** The TLS session under this connection (protocol, cipher, PSK user), or undefined in plaintext. */
  readonly tls: TlsIdentity | undefined;
  private readonly core: Transmission;
  private readonly limits: RequestLimits;
  private readonly contextNames = new Map<number, string>();

  /** @internal Made by `Client.go()`; the reader holds whatever arrived after the handshake. */
  constructor(transport: Transport, reader: FrameReader, info: ExportInfo, negotiated: Negotiated) {
    this.info = info;
    this.metaContexts = negotiated.metaContexts;
    for (const [name, id] of negotiated.metaContexts) this.contextNames.set(id, name);
    this.structuredReplies = negotiated.structured;
    this.extendedHeaders = negotiated.extended;
    this.strict = negotiated.strict;
    this.tls = negotiated.tls;
    this.limits = requestLimits(info);
    const rules = { structured: negotiated.structured, extended: negotiated.extended, strict: negotiated.strict };
    this.core = new Transmission(transport, reader, rules, this.limits.piece);
  }

  /** Where the connection is (see ConnectionState). */
  get state(): ConnectionState {
    return this.core.state;
  }

  /**
   * How replies are read: 'direct' when the kernel reads them straight into this
   * connection's buffers (the fast path, a plain TCP or unix socket), 'copy' otherwise
   * (TLS, a stream of your own, or a Node release without the internals it needs).
   */
  get readMode(): 'direct' | 'copy' {
    return this.core.readMode;
  }

  /** Requests sent on this connection and not yet fully answered. */
  get inFlight(): number {
    return this.core.inFlight;
  }

  /** One: this connection. */
  get connectionCount(): number {
    return 1;
  }

  /** Set once the connection failed or closed; every call rejects with it. */
  get error(): NbdError | undefined {
    return this.core.error;
  }

  // ------------------------------------------------------------ commands

  /** Reads `length` bytes at `offset`. A large single-chunk answer is a view into a read arena, not a copy. */
  async read(offset: number, length: number, opts: Signal = {}): Promise<Uint8Array> {
    checkRange(this.info, this.limits, offset, length, 'read');
    if (length === 0) return new Uint8Array(0);
    if (length <= this.limits.piece) return this.core.submit('read', 0, offset, length, undefined, opts.signal);
    const out = new Uint8Array(length);
    await this.readInto(out, offset, opts);
    return out;
  }

  /** See ExportHandle.readLent: bytes lent from this connection's read arena until `release()`. */
  async readLent(offset: number, length: number, opts: Signal = {}): Promise<LentBytes> {
    checkRange(this.info, this.limits, offset, length, 'read');
    if (length === 0 || length > this.limits.piece) return notLent(await this.read(offset, length, opts));
    return this.core.submit('read-lent', 0, offset, length, undefined, opts.signal);
  }

  /** Reads `buf.length` bytes at `offset` into `buf`. After an abort, nothing is written into `buf` any more. */
  async readInto(buf: Uint8Array, offset: number, opts: Signal = {}): Promise<void> {
    checkBuffer(buf, 'readInto');
    checkRange(this.info, this.limits, offset, buf.length, 'read');
    const jobs: Promise<void>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.limits.piece) {
      const n = Math.min(this.limits.piece, buf.length - pos);
      jobs.push(this.core.submit('read-into', 0, offset + pos, n, { dest: buf, destPos: pos }, opts.signal));
    }
    await all(jobs);
  }

  /** Writes `buf` at `offset`; `fua` makes it durable before the reply. */
  async write(buf: Uint8Array, offset: number, opts: WriteOptions = {}): Promise<void> {
    checkBuffer(buf, 'write');
    checkWritable(this.info, 'write');
    checkRange(this.info, this.limits, offset, buf.length, 'write');
    const flags = fuaFlag(this.info, opts.fua);
    const jobs: Promise<void>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.limits.piece) {
      const n = Math.min(this.limits.piece, buf.length - pos);
      const payload = n === buf.length ? buf : buf.subarray(pos, pos + n);
      jobs.push(this.core.submit('write', flags, offset + pos, n, { payload }, opts.signal));
    }
    await all(jobs);
  }

  /** Makes every completed write durable. */
  async flush(opts: Signal = {}): Promise<void> {
    checkCan(this.info.can.flush, 'flush', 'SEND_FLUSH');
    await this.core.submit('flush', 0, 0, 0, undefined, opts.signal);
  }

  /** Discards a range (a hint: its contents are undefined afterwards). */
  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    checkWritable(this.info, 'trim');
    checkCan(this.info.can.trim, 'trim', 'SEND_TRIM');
    await this.split('trim', fuaFlag(this.info, opts.fua), offset, length, opts.signal);
  }

  /** Writes zeroes; `noHole` asks for allocated zeroes, `fast` fails with ENOTSUP unless it is cheap. */
  async zero(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    checkWritable(this.info, 'zero');
    checkCan(this.info.can.zero, 'write zeroes', 'SEND_WRITE_ZEROES');
    let flags = fuaFlag(this.info, opts.fua);
    if (opts.noHole) flags |= CommandFlag.NO_HOLE;
    if (opts.fast) {
      checkCan(this.info.can.fastZero, 'fast zero', 'SEND_FAST_ZERO');
      flags |= CommandFlag.FAST_ZERO;
    }
    await this.split('zero', flags, offset, length, opts.signal);
  }

  /** Asks the server to prefetch a range. */
  async cache(offset: number, length: number, opts: Signal = {}): Promise<void> {
    checkCan(this.info.can.cache, 'cache', 'SEND_CACHE');
    await this.split('cache', 0, offset, length, opts.signal);
  }

  /**
   * Block status of a range for every selected metadata context (or those named in
   * `contexts`). The length is a hint: the server may describe less (or, for the
   * last extent, more) than asked; requests beyond one maximum payload are clamped.
   */
  async blockStatus(offset: number, length: number, opts: BlockStatusOptions = {}): Promise<Map<string, Extent[]>> {
    if (this.metaContexts.size === 0) {
      throw new NbdInvalidArgumentError(
        'block status: no metadata context was negotiated: pass metaContexts to go() (e.g. ["base:allocation"])',
      );
    }
    const ids: number[] = [];
    for (const name of opts.contexts ?? this.metaContexts.keys()) {
      const id = this.metaContexts.get(name);
      if (id === undefined) throw new NbdInvalidArgumentError(`block status: metadata context "${name}" was not negotiated`);
      ids.push(id);
    }
    checkRange(this.info, this.limits, offset, length, 'block status');
    if (length === 0) throw new NbdInvalidArgumentError('block status of an empty range');
    const clamped = Math.min(length, this.extendedHeaders ? Number.MAX_SAFE_INTEGER : this.limits.piece);
    let flags = opts.reqOne ? CommandFlag.REQ_ONE : 0;
    let payload: Uint8Array | undefined;
    if (this.extendedHeaders && this.info.can.blockStatusPayload && ids.length < this.metaContexts.size) {
      // Ask only for the contexts wanted (extended headers' BLOCK_STATUS payload form).
      payload = encodeBlockStatusPayload({ effectLength: BigInt(clamped), contextIds: ids });
      flags |= CommandFlag.PAYLOAD_LEN;
    }
    const contextIds = payload !== undefined ? ids : [...this.contextNames.keys()];
    const byId = await this.core.submit('block-status', flags, offset, clamped, { contextIds, payload }, opts.signal);
    const out = new Map<string, Extent[]>();
    for (const id of ids) out.set(this.contextNames.get(id)!, byId.get(id) ?? []);
    return out;
  }

  /**
   * Waits for the requests in flight, sends NBD_CMD_DISC and closes. New requests are
   * refused from the call on. `signal` aborts the wait: the connection is then closed at
   * once, without DISC, and requests still in flight reject with NbdClosedError.
   */
  async disconnect(opts: Signal = {}): Promise<void> {
    await this.core.disconnect(opts.signal);
  }

  /** `await using conn = await client.go()`: disconnects (a failed, closed or detached connection has nothing to do). */
  async [Symbol.asyncDispose](): Promise<void> {
    const s = this.core.state;
    if (s !== 'detached' && s !== 'failed' && s !== 'closed') await this.core.disconnect(undefined);
  }

  /**
   * Stops using the socket without closing it, for handing its descriptor to the kernel
   * (`@nbd/linux`): nothing in flight, nothing read past the handshake's end, and
   * reading stopped at the socket handle. Throws if the socket cannot stop reading
   * (the connection then stays usable).
   */
  detach(): { socket: Duplex; info: ExportInfo } {
    return { socket: this.core.detach(), info: this.info };
  }

  /**
   * TRIM, WRITE_ZEROES and CACHE carry no payload, so the maximum payload does not bound them;
   * with extended headers their 64-bit length goes out whole (qemu 10 and nbdkit take it),
   * otherwise they are split into maximum-payload pieces, which every server accepts.
   */
  private async split(
    kind: 'trim' | 'zero' | 'cache',
    flags: number,
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    checkRange(this.info, this.limits, offset, length, kind);
    const step = this.extendedHeaders ? Math.max(length, 1) : this.limits.piece;
    const jobs: Promise<void>[] = [];
    for (let pos = 0; pos < length; pos += step) {
      jobs.push(this.core.submit(kind, flags, offset + pos, Math.min(step, length - pos), undefined, signal));
    }
    await all(jobs);
  }
}

/** Like Promise.all, but waits for every job so no rejection goes unobserved. */
async function all(jobs: Promise<void>[]): Promise<void> {
  if (jobs.length === 1) {
    await jobs[0];
    return;
  }
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
