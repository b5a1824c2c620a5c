// The transmission phase's public face: the commands, with the caller's mistakes
// refused before anything is sent (request-checks.ts) and requests longer than the
// server's maximum payload split. The glue below it (transmission.ts) owns the
// transport, the engines and the connection's state.
import type { Duplex } from 'node:stream';
import type { TlsIdentity } from '@nbd/node';
import { Command, CommandFlag, encodeBlockStatusPayload, type NbdError, NbdInvalidArgumentError, type Transport } from '@nbd/protocol';
import type { ExportInfo } from './export-info.js';
import type { FrameReader } from './frame-reader.js';
import type { Extent } from './reply-assembler.js';
import { checkBuffer, checkCan, checkRange, checkWritable, fuaFlag, type RequestLimits, requestLimits } from './request-checks.js';
import { type ConnectionState, type LentBytes, notLent, Transmission } from './transmission.js';

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

/** The `signal` option of every call. */
export interface Signal {
  /** Aborts the call: it rejects with NbdAbortError (`cause`: the signal's reason). See the README for what each call leaves behind. */
  signal?: AbortSignal;
}

export type { ConnectionState, LentBytes };

/** An export in the transmission phase: many requests in flight, replies matched by cookie, out of order. */
export class Connection {
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

  /** Requests sent and not yet answered. */
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

  /** Set once the connection failed or closed; every call rejects with it. */
  get error(): NbdError | undefined {
    return this.core.error;
  }

  // ------------------------------------------------------------ commands

  /** Reads `length` bytes at `offset`. A large single-chunk answer is a view into a read arena, not a copy. */
  async read(offset: number, length: number, opts: Signal = {}): Promise<Uint8Array> {
    checkRange(this.info, this.limits, offset, length, 'read');
    if (length === 0) return new Uint8Array(0);
    if (length <= this.limits.piece)
      return (await this.core.submit(Command.READ, 0, offset, length, { signal: opts.signal, what: 'read' })) as Uint8Array;
    const out = new Uint8Array(length);
    await this.readInto(out, offset, opts);
    return out;
  }

  /**
   * Reads without a copy: the bytes are lent from the connection's read arena and stay
   * valid until `release()`, after which their memory is reused for later replies (no
   * allocation, no garbage). Use them before releasing; `using` releases at scope end.
   * Reads longer than one request, and replies in several chunks, are copied into a
   * buffer of their own (then `release()` does nothing).
   */
  async readLent(offset: number, length: number, opts: Signal = {}): Promise<LentBytes> {
    checkRange(this.info, this.limits, offset, length, 'read');
    if (length === 0 || length > this.limits.piece) return notLent(await this.read(offset, length, opts));
    return (await this.core.submit(Command.READ, 0, offset, length, { signal: opts.signal, what: 'read', lend: true })) as LentBytes;
  }

  /** Reads `buf.length` bytes at `offset` into `buf`. After an abort, nothing is written into `buf` any more. */
  async readInto(buf: Uint8Array, offset: number, opts: Signal = {}): Promise<void> {
    checkBuffer(buf, 'readInto');
    checkRange(this.info, this.limits, offset, buf.length, 'read');
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.limits.piece) {
      const n = Math.min(this.limits.piece, buf.length - pos);
      jobs.push(this.core.submit(Command.READ, 0, offset + pos, n, { signal: opts.signal, what: 'read', dest: buf, destPos: pos }));
    }
    await all(jobs);
  }

  /** Writes `buf` at `offset`; `fua` makes it durable before the reply. */
  async write(buf: Uint8Array, offset: number, opts: { fua?: boolean } & Signal = {}): Promise<void> {
    checkBuffer(buf, 'write');
    checkWritable(this.info, 'write');
    checkRange(this.info, this.limits, offset, buf.length, 'write');
    const flags = fuaFlag(this.info, opts.fua);
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.limits.piece) {
      const n = Math.min(this.limits.piece, buf.length - pos);
      const payload = n === buf.length ? buf : buf.subarray(pos, pos + n);
      jobs.push(this.core.submit(Command.WRITE, flags, offset + pos, n, { signal: opts.signal, what: 'write', payload }));
    }
    await all(jobs);
  }

  /** Makes every completed write durable. */
  async flush(opts: Signal = {}): Promise<void> {
    checkCan(this.info.can.flush, 'flush', 'SEND_FLUSH');
    await this.core.submit(Command.FLUSH, 0, 0, 0, { signal: opts.signal, what: 'flush' });
  }

  /** Discards a range (a hint: its contents are undefined afterwards). */
  async trim(offset: number, length: number, opts: { fua?: boolean } & Signal = {}): Promise<void> {
    checkWritable(this.info, 'trim');
    checkCan(this.info.can.trim, 'trim', 'SEND_TRIM');
    await this.split(Command.TRIM, fuaFlag(this.info, opts.fua), offset, length, opts.signal, 'trim');
  }

  /** Writes zeroes; `noHole` asks for allocated zeroes, `fast` fails with ENOTSUP unless it is cheap. */
  async zero(offset: number, length: number, opts: { noHole?: boolean; fast?: boolean; fua?: boolean } & Signal = {}): Promise<void> {
    checkWritable(this.info, 'zero');
    checkCan(this.info.can.zero, 'write zeroes', 'SEND_WRITE_ZEROES');
    let flags = fuaFlag(this.info, opts.fua);
    if (opts.noHole) flags |= CommandFlag.NO_HOLE;
    if (opts.fast) {
      checkCan(this.info.can.fastZero, 'fast zero', 'SEND_FAST_ZERO');
      flags |= CommandFlag.FAST_ZERO;
    }
    await this.split(Command.WRITE_ZEROES, flags, offset, length, opts.signal, 'zero');
  }

  /** Asks the server to prefetch a range. */
  async cache(offset: number, length: number, opts: Signal = {}): Promise<void> {
    checkCan(this.info.can.cache, 'cache', 'SEND_CACHE');
    await this.split(Command.CACHE, 0, offset, length, opts.signal, 'cache');
  }

  /**
   * Block status of a range for every selected metadata context (or those named in
   * `contexts`). The length is a hint: the server may describe less (or, for the
   * last extent, more) than asked; requests beyond one maximum payload are clamped.
   */
  async blockStatus(
    offset: number,
    length: number,
    opts: { contexts?: string[]; reqOne?: boolean } & Signal = {},
  ): Promise<Map<string, Extent[]>> {
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
    const byId = (await this.core.submit(Command.BLOCK_STATUS, flags, offset, clamped, {
      signal: opts.signal,
      what: 'block status',
      payload,
      contextIds,
    })) as Map<number, Extent[]>;
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
    cmd: number,
    flags: number,
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<void> {
    checkRange(this.info, this.limits, offset, length, what);
    const step = this.extendedHeaders ? Math.max(length, 1) : this.limits.piece;
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < length; pos += step) {
      jobs.push(this.core.submit(cmd, flags, offset + pos, Math.min(step, length - pos), { signal, what }));
    }
    await all(jobs);
  }
}

/** Like Promise.all, but waits for every job so no rejection goes unobserved. */
async function all(jobs: Promise<unknown>[]): Promise<void> {
  if (jobs.length === 1) {
    await jobs[0];
    return;
  }
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
