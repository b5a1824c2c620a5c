// The transmission phase: many requests in flight on one socket. One reader loop
// feeds the stream decoder and matches replies to a Map<cookie, pending>; one
// writer corks small headers together and respects socket backpressure.
import type { Duplex } from 'node:stream';
import {
  CHUNK_ERROR_BIT,
  ChunkType,
  Command,
  CommandFlag,
  decodeChunkPayload,
  encodeBlockStatusPayload,
  Errno,
  Limits,
  NbdErrnoError,
  normalizeErrno,
  ProtocolError,
  ReplyFlag,
  type ServerFrame,
  type ServerStreamDecoder,
  Size,
  writeRequest,
} from '@nbd/protocol';

import type { ExportInfo } from './export-info.js';
import type { Intake } from './intake.js';

export interface Extent {
  offset: number;
  length: number;
  flags: number;
}

/** Negotiated in the handshake and fixed for the connection's life. */
export interface Negotiated {
  structured: boolean;
  extended: boolean;
  /** Selected metadata contexts, name → id. */
  metaContexts: Map<string, number>;
}

interface Signal {
  signal?: AbortSignal;
}

/** One request on the wire. */
interface Pending {
  cmd: number;
  offset: number;
  length: number;
  /** READ destination (readInto or a split read); `single` is the zero-copy path. */
  buf: Uint8Array | undefined;
  bufPos: number;
  single: Uint8Array | undefined;
  /** `single` is lent (copy's reads): resolve with it and a release function. */
  lend: boolean;
  release: (() => void) | undefined;
  covered: number;
  /** BLOCK_STATUS results by context id. */
  extents: Map<number, Extent[]> | undefined;
  error: Error | undefined;
  /** The caller gave up (abort signal): the reply is read and discarded. */
  abandoned: boolean;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Bytes queued in the socket beyond which new requests wait for 'drain'. */
const HIGH_WATER = 4 * 1024 * 1024;
/** Requests already on the wire from which new ones are held back until BATCH of them are queued. */
const DEEP = 8;
const BATCH = 4;
/** Bytes of request headers staged per buffer before a new one is taken. */
const STAGE = 16 * 1024;
/** READ answers below this size are copied out of the read arena rather than returned as views. */
const SMALL_READ = 64 * 1024;
/** Largest payload per request we send even when the server allows more (matches the decoder's chunk limit). */
const MAX_REQUEST = Limits.DEFAULT_MAX_PAYLOAD;

function einval(msg: string): NbdErrnoError {
  return new NbdErrnoError(Errno.EINVAL, msg);
}

export class Connection {
  /** What the handshake told us about the export. */
  readonly info: ExportInfo;
  /** Selected metadata contexts, name → id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  readonly structuredReplies: boolean;
  readonly extendedHeaders: boolean;

  private readonly socket: Duplex;
  private readonly intake: Intake;
  private readonly decoder: ServerStreamDecoder;
  private readonly pending = new Map<number, Pending>();
  private readonly contextNames = new Map<number, string>();
  private nextCookie = 1;
  /** Request headers are written here one after another; a run of them leaves as one chunk. */
  private stage: Buffer = Buffer.allocUnsafe(STAGE);
  private stagePos = 0;
  private runStart = -1; // start of the header run not yet in `out`
  /** Chunks for the next flush, in order: header runs and WRITE payloads (not copied). */
  private out: Uint8Array[] = [];
  private flushQueued = false;
  private staged = 0; // requests in `out` and the run, not yet written
  private ending = false; // end the socket after the next flush (DISC sent)
  private failure: Error | undefined;
  private closing = false; // disconnect() called or ESHUTDOWN seen: no new requests
  private shutdownSeen = false;
  private discSent = false;
  private idle: PromiseWithResolvers<void> | undefined;
  private readonly closed = Promise.withResolvers<void>();
  private detached = false;
  /** Largest aligned length of one request. */
  private readonly piece: number;
  private readonly align: number;

  /** @internal Created by `Client.go()`. */
  constructor(io: { socket: Duplex; intake: Intake }, info: ExportInfo, negotiated: Negotiated) {
    this.socket = io.socket;
    this.intake = io.intake;
    this.decoder = io.intake.decoder;
    this.info = info;
    this.metaContexts = negotiated.metaContexts;
    for (const [name, id] of negotiated.metaContexts) this.contextNames.set(id, name);
    this.structuredReplies = negotiated.structured;
    this.extendedHeaders = negotiated.extended;
    this.decoder.startTransmission(negotiated.extended);
    this.decoder.readLength = (cookie) => {
      const p = this.pending.get(Number(cookie));
      return p !== undefined && p.cmd === Command.READ ? p.length : undefined;
    };
    const b = info.blockSizes;
    this.align = b?.min ?? 1;
    const max = b && b.max !== Limits.NO_PAYLOAD_LIMIT ? Math.min(b.max, MAX_REQUEST) : MAX_REQUEST;
    this.piece = Math.max(this.align, max - (max % this.align));
    this.decoder.maxChunk = Math.max(this.decoder.maxChunk, this.piece + 64);
    this.closed.promise.catch(() => {});
    this.intake.onBytes = this.onBytes;
    this.intake.keepAll = false;
    this.socket.on('error', this.onError);
    this.socket.on('close', this.onClose);
    this.socket.on('drain', this.onDrain);
    // Frames that arrived with the end of the handshake.
    this.pump();
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Set once the connection failed or closed; every call rejects with it. */
  get error(): Error | undefined {
    return this.failure;
  }

  // ------------------------------------------------------------ commands

  /** Reads `length` bytes at `offset`. A single-chunk reply is returned without copying. */
  async read(offset: number, length: number, opts: Signal = {}): Promise<Uint8Array> {
    this.checkRange(offset, length, 'read');
    if (length === 0) return new Uint8Array(0);
    if (length <= this.piece) return this.submit(Command.READ, 0, offset, length, undefined, undefined, opts.signal) as Promise<Uint8Array>;
    const out = new Uint8Array(length);
    await this.readInto(out, offset, opts);
    return out;
  }

  /**
   * @internal For copy(): a read whose answer may be a view into a read arena, lent
   * until `release()` is called (then the arena is reused). Use the data before that.
   */
  async readLent(offset: number, length: number, opts: Signal = {}): Promise<{ data: Uint8Array; release: () => void }> {
    this.checkRange(offset, length, 'read');
    if (length === 0 || length > this.piece) return { data: await this.read(offset, length, opts), release: noop };
    return this.submit(Command.READ, 0, offset, length, undefined, undefined, opts.signal, undefined, true) as Promise<{ data: Uint8Array; release: () => void }>;
  }

  /** Reads `buf.length` bytes at `offset` into `buf`. */
  async readInto(buf: Uint8Array, offset: number, opts: Signal = {}): Promise<void> {
    this.checkRange(offset, buf.length, 'read');
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.piece) {
      const n = Math.min(this.piece, buf.length - pos);
      jobs.push(this.submit(Command.READ, 0, offset + pos, n, undefined, { buf, bufPos: pos }, opts.signal));
    }
    await all(jobs);
  }

  /** Writes `buf` at `offset`; `fua` makes it durable before the reply. */
  async write(buf: Uint8Array, offset: number, opts: { fua?: boolean } & Signal = {}): Promise<void> {
    this.checkWritable('write');
    this.checkRange(offset, buf.length, 'write');
    const flags = this.fuaFlag(opts.fua);
    if (buf.length === 0) return;
    if (buf.length <= this.piece) {
      await this.submit(Command.WRITE, flags, offset, buf.length, buf, undefined, opts.signal);
      return;
    }
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < buf.length; pos += this.piece) {
      const n = Math.min(this.piece, buf.length - pos);
      jobs.push(this.submit(Command.WRITE, flags, offset + pos, n, buf.subarray(pos, pos + n), undefined, opts.signal));
    }
    await all(jobs);
  }

  /** Makes every completed write durable. */
  async flush(opts: Signal = {}): Promise<void> {
    if (!this.info.can.flush) throw einval('the server does not support flush (no SEND_FLUSH)');
    await this.submit(Command.FLUSH, 0, 0, 0, undefined, undefined, opts.signal);
  }

  /** Discards a range (a hint: its contents are undefined afterwards). */
  async trim(offset: number, length: number, opts: { fua?: boolean } & Signal = {}): Promise<void> {
    this.checkWritable('trim');
    if (!this.info.can.trim) throw einval('the server does not support trim (no SEND_TRIM)');
    await this.split(Command.TRIM, this.fuaFlag(opts.fua), offset, length, opts.signal);
  }

  /** Writes zeroes; `noHole` asks for allocated zeroes, `fast` fails with ENOTSUP unless it is cheap. */
  async zero(offset: number, length: number, opts: { noHole?: boolean; fast?: boolean; fua?: boolean } & Signal = {}): Promise<void> {
    this.checkWritable('zero');
    if (!this.info.can.zero) throw einval('the server does not support write zeroes (no SEND_WRITE_ZEROES)');
    let flags = this.fuaFlag(opts.fua);
    if (opts.noHole) flags |= CommandFlag.NO_HOLE;
    if (opts.fast) {
      if (!this.info.can.fastZero) throw einval('the server does not support fast zero (no SEND_FAST_ZERO)');
      flags |= CommandFlag.FAST_ZERO;
    }
    await this.split(Command.WRITE_ZEROES, flags, offset, length, opts.signal);
  }

  /** Asks the server to prefetch a range. */
  async cache(offset: number, length: number, opts: Signal = {}): Promise<void> {
    if (!this.info.can.cache) throw einval('the server does not support cache (no SEND_CACHE)');
    await this.split(Command.CACHE, 0, offset, length, opts.signal);
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
      throw einval('no metadata context was negotiated: pass metaContexts to go() (e.g. ["base:allocation"])');
    }
    const wanted = opts.contexts ?? [...this.metaContexts.keys()];
    const ids: number[] = [];
    for (const name of wanted) {
      const id = this.metaContexts.get(name);
      if (id === undefined) throw einval(`metadata context "${name}" was not negotiated`);
      ids.push(id);
    }
    this.checkRange(offset, length, 'block status');
    if (length === 0) throw einval('block status of an empty range');
    const clamped = Math.min(length, this.extendedHeaders ? Number.MAX_SAFE_INTEGER : this.piece);
    let flags = opts.reqOne ? CommandFlag.REQ_ONE : 0;
    let payload: Uint8Array | undefined;
    if (this.extendedHeaders && this.info.can.blockStatusPayload && ids.length < this.metaContexts.size) {
      // Ask only for the contexts wanted (extended headers' BLOCK_STATUS payload form).
      payload = encodeBlockStatusPayload({ effectLength: BigInt(clamped), contextIds: ids });
      flags |= CommandFlag.PAYLOAD_LEN;
    }
    const byId = (await this.submit(Command.BLOCK_STATUS, flags, offset, clamped, payload, undefined, opts.signal, payload?.length)) as Map<number, Extent[]>;
    const out = new Map<string, Extent[]>();
    for (const id of ids) out.set(this.contextNames.get(id)!, byId.get(id) ?? []);
    return out;
  }

  /** Waits for in-flight requests, sends NBD_CMD_DISC and closes the socket. */
  async disconnect(opts: Signal = {}): Promise<void> {
    if (this.detached) throw new Error('disconnect(): the connection was detached');
    this.closing = true;
    if (!this.failure) {
      if (this.pending.size > 0) {
        this.idle ??= Promise.withResolvers<void>();
        await raceSignal(this.idle.promise, opts.signal);
      }
      this.sendDisc();
    }
    const timer = setTimeout(() => this.socket.destroy(), 2000);
    timer.unref?.();
    await this.closed.promise.catch(() => {});
    clearTimeout(timer);
  }

  /**
   * Stops using the socket without closing it, for handing its fd to the kernel
   * (`@nbd/linux`). Only possible when nothing is in flight or buffered.
   */
  detach(): { socket: Duplex; info: ExportInfo } {
    if (this.failure) throw this.failure;
    if (this.closing) throw new Error('detach(): the connection is closing');
    if (this.pending.size > 0 || this.decoder.buffered > 0 || this.out.length > 0 || this.runStart >= 0) {
      throw new Error('detach(): requests are still in flight or bytes are buffered');
    }
    this.detached = true;
    this.closing = true;
    this.intake.stop();
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    this.socket.off('drain', this.onDrain);
    this.socket.pause();
    // Pausing a stream does not stop libuv reading into its buffer; the kernel must get every byte.
    (this.socket as unknown as { _handle?: { readStop?: () => void } })._handle?.readStop?.();
    return { socket: this.socket, info: this.info };
  }

  // ------------------------------------------------------------ requests

  private checkRange(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw einval(`${what}: offset ${offset} is not a non-negative safe integer`);
    if (!Number.isSafeInteger(length) || length < 0) throw einval(`${what}: length ${length} is not a non-negative safe integer`);
    if (offset + length > this.info.size) {
      throw einval(`${what}: range ${offset}+${length} is beyond the end of the export (${this.info.size} bytes)`);
    }
    if (this.align > 1 && (offset % this.align !== 0 || length % this.align !== 0)) {
      throw einval(`${what}: ${offset}+${length} is not aligned to the server's minimum block size ${this.align}`);
    }
  }

  private checkWritable(what: string): void {
    if (this.info.is.readOnly) throw new NbdErrnoError(Errno.EPERM, `${what}: the export is read-only`);
  }

  private fuaFlag(fua: boolean | undefined): number {
    if (!fua) return 0;
    if (!this.info.can.fua) throw einval('the server does not support FUA (no SEND_FUA)');
    return CommandFlag.FUA;
  }

  /**
   * TRIM, WRITE_ZEROES and CACHE carry no payload, so the maximum payload does not bound them;
   * with extended headers their 64-bit length goes out whole (qemu 10 and nbdkit take it),
   * otherwise they are split into maximum-payload pieces, which every server accepts.
   */
  private async split(cmd: number, flags: number, offset: number, length: number, signal: AbortSignal | undefined): Promise<void> {
    this.checkRange(offset, length, nameOfCmd(cmd));
    const step = this.extendedHeaders ? Math.max(length, 1) : this.piece;
    const jobs: Promise<unknown>[] = [];
    for (let pos = 0; pos < length; pos += step) {
      jobs.push(this.submit(cmd, flags, offset + pos, Math.min(step, length - pos), undefined, undefined, signal));
    }
    await all(jobs);
  }

  private submit(
    cmd: number,
    flags: number,
    offset: number,
    length: number,
    payload: Uint8Array | undefined,
    read: { buf: Uint8Array; bufPos: number } | undefined,
    signal: AbortSignal | undefined,
    payloadLength?: number,
    lend = false,
  ): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.shutdownSeen) return Promise.reject(new NbdErrnoError(Errno.ESHUTDOWN, 'the server is shutting down; no new requests'));
    if (this.closing) return Promise.reject(new Error('the connection is closing (disconnect() was called)'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const cookie = this.nextCookie++;
    const extended = this.extendedHeaders;
    let wireLength = length;
    if (extended && (cmd === Command.WRITE || payloadLength !== undefined)) {
      flags |= CommandFlag.PAYLOAD_LEN;
      if (payloadLength !== undefined) wireLength = payloadLength;
    }
    return new Promise((resolve, reject) => {
      const p: Pending = {
        cmd,
        offset,
        length,
        buf: read?.buf,
        bufPos: read?.bufPos ?? 0,
        single: undefined,
        lend,
        release: undefined,
        covered: 0,
        extents: cmd === Command.BLOCK_STATUS ? new Map() : undefined,
        error: undefined,
        abandoned: false,
        resolve,
        reject,
        signal,
        onAbort: undefined,
      };
      if (signal) {
        p.onAbort = () => {
          p.abandoned = true;
          reject(signal.reason);
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(cookie, p);
      this.send(flags, cmd, cookie, offset, wireLength, payload);
    });
  }

  /**
   * Queues a request: its header goes into the staging buffer, its payload (if any) is
   * referenced. Everything queued in one event-loop turn (all replies read in it) leaves
   * in one write at setImmediate.
   */
  private send(flags: number, type: number, cookie: number, offset: number, length: number, payload: Uint8Array | undefined): void {
    const extended = this.extendedHeaders;
    const size = extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
    if (this.stagePos + size > this.stage.length) {
      this.closeRun();
      this.stage = Buffer.allocUnsafe(STAGE); // the old one may still be queued in the socket: never rewritten
      this.stagePos = 0;
    }
    writeRequest(this.stage, this.stagePos, { flags, type, cookie: BigInt(cookie), offset: BigInt(offset), length: BigInt(length) }, extended);
    if (this.runStart < 0) this.runStart = this.stagePos;
    this.stagePos += size;
    if (payload !== undefined && payload.length > 0) {
      this.closeRun();
      this.out.push(payload);
    }
    this.staged++;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(this.flushOut);
  }

  /**
   * While the pipe is well filled, a lone request waits for a few more (or for the pipe to
   * run lower): every write wakes a server thread, so fewer, fuller writes cost both sides less.
   */
  private holding(): boolean {
    return !this.ending && this.staged < BATCH && this.pending.size - this.staged >= DEEP;
  }

  private closeRun(): void {
    if (this.runStart < 0) return;
    this.out.push(this.stage.subarray(this.runStart, this.stagePos));
    this.runStart = -1;
  }

  private readonly flushOut = (): void => {
    this.flushQueued = false;
    if (this.failure) return;
    // Beyond HIGH_WATER queued in the socket, requests wait in `out` for the 'drain' that is due.
    if ((this.socket.writableLength > HIGH_WATER && this.socket.writableNeedDrain) || this.holding()) return;
    this.staged = 0;
    this.closeRun();
    const out = this.out;
    if (out.length === 1) this.socket.write(out[0]!);
    else if (out.length > 1) {
      this.socket.cork();
      for (const c of out) this.socket.write(c);
      this.socket.uncork();
    }
    this.out = [];
    if (this.ending) {
      this.ending = false;
      this.socket.end();
    }
  };

  private readonly onDrain = (): void => {
    if (this.out.length > 0 || this.runStart >= 0 || this.ending) this.flushOut();
  };

  private sendDisc(): void {
    if (this.discSent || this.failure) return;
    this.discSent = true;
    this.closing = true;
    this.send(0, Command.DISC, this.nextCookie++, 0, 0, undefined);
    this.ending = true;
  }

  // ------------------------------------------------------------ replies

  private readonly onBytes = (): void => this.pump();

  private pump(): void {
    try {
      for (;;) {
        if (this.failure) return;
        const f = this.decoder.next();
        if (f === undefined) return;
        this.onFrame(f);
      }
    } catch (e) {
      this.fail(e instanceof ProtocolError ? e : new ProtocolError(`bad reply stream: ${(e as Error).message}`));
    }
  }

  private onFrame(f: ServerFrame): void {
    if (f.kind === 'simple-reply') {
      const p = this.take(f.cookie);
      if (f.error !== 0) p.error = this.replyError(f.error, '');
      else if (p.cmd === Command.READ) this.readData(p, p.offset, f.data ?? new Uint8Array(0));
      this.complete(p);
      return;
    }
    if (f.kind !== 'chunk') throw new ProtocolError(`unexpected ${f.kind} during transmission`);
    const h = f.header;
    if (!this.structuredReplies) throw new ProtocolError('structured reply chunk received, but structured replies were not negotiated');
    const p = this.pending.get(Number(h.cookie));
    if (p === undefined) throw new ProtocolError(`reply for unknown cookie ${h.cookie}`);
    const type = h.type;
    if (type === ChunkType.OFFSET_DATA || type === ChunkType.OFFSET_HOLE) {
      if (p.cmd !== Command.READ) throw new ProtocolError(`read data chunk for a non-read request (cookie ${h.cookie})`);
      const pl = f.payload;
      if (type === ChunkType.OFFSET_DATA && pl.length > 8) {
        // u64 offset | data — read in place: this is the one chunk of every bulk read.
        this.readData(p, checkedOffset(new DataView(pl.buffer, pl.byteOffset, 8).getBigUint64(0)), pl.subarray(8));
      } else {
        const c = decodeChunkPayload(type, pl); // holes, and the errors of a short OFFSET_DATA
        if (c.kind === 'offset-data') this.readData(p, checkedOffset(c.offset), c.data);
        else if (c.kind === 'offset-hole') this.readHole(p, checkedOffset(c.offset), c.size);
      }
    } else if (type === ChunkType.BLOCK_STATUS || type === ChunkType.BLOCK_STATUS_EXT) {
      if (p.cmd !== Command.BLOCK_STATUS) throw new ProtocolError(`block status chunk for a non-block-status request (cookie ${h.cookie})`);
      const c = decodeChunkPayload(type, f.payload);
      if (c.kind === 'block-status' || c.kind === 'block-status-ext') {
        if (!this.contextNames.has(c.contextId)) throw new ProtocolError(`block status for unknown context id ${c.contextId}`);
        if (p.extents!.has(c.contextId)) throw new ProtocolError(`two block status chunks for context id ${c.contextId}`);
        const list: Extent[] = [];
        let off = p.offset;
        for (const e of c.extents) {
          if (e.length === 0n) throw new ProtocolError('block status extent of length 0');
          const len = Number(e.length);
          list.push({ offset: off, length: len, flags: e.flags });
          off += len;
        }
        p.extents!.set(c.contextId, list);
      }
    } else if (type === ChunkType.ERROR || type === ChunkType.ERROR_OFFSET) {
      const c = decodeChunkPayload(type, f.payload);
      if (c.kind === 'error' || c.kind === 'error-offset') {
        const where = c.kind === 'error-offset' ? ` (at offset ${c.offset})` : '';
        p.error ??= this.replyError(c.error, c.message + where, c.kind === 'error-offset' ? Number(c.offset) : undefined);
      }
    } else if (type === ChunkType.NONE) {
      if (f.payload.length !== 0) throw new ProtocolError('NONE chunk with a payload');
      if ((h.flags & ReplyFlag.DONE) === 0) throw new ProtocolError('NONE chunk without the DONE flag');
    } else if ((type & CHUNK_ERROR_BIT) !== 0) {
      // Unknown error chunk: the request failed, the stream is still in sync.
      const errno = f.payload.length >= 4 ? new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0) : Errno.EINVAL;
      p.error ??= this.replyError(errno, `unknown error chunk type 0x${type.toString(16)}`);
    } else {
      throw new ProtocolError(`unknown reply chunk type 0x${type.toString(16)}`);
    }
    if ((h.flags & ReplyFlag.DONE) !== 0) {
      this.pending.delete(Number(h.cookie));
      this.complete(p);
    }
  }

  private take(cookie: bigint): Pending {
    const key = Number(cookie);
    const p = this.pending.get(key);
    if (p === undefined) throw new ProtocolError(`reply for unknown cookie ${cookie}`);
    this.pending.delete(key);
    return p;
  }

  private replyError(errno: number, message: string, offset?: number): NbdErrnoError {
    const e = normalizeErrno(errno);
    if (e === Errno.ESHUTDOWN) this.shutdownSeen = true;
    return new NbdErrnoError(e, message || undefined, { offset });
  }

  private readData(p: Pending, offset: number, data: Uint8Array): void {
    const rel = offset - p.offset;
    if (rel < 0 || rel + data.length > p.length) {
      throw new ProtocolError(`read chunk ${offset}+${data.length} lies outside the request ${p.offset}+${p.length}`);
    }
    p.covered += data.length;
    if (p.buf === undefined) {
      if (rel === 0 && data.length === p.length && p.single === undefined) {
        // The whole answer in one view: no copy. Small ones are copied so that a caller
        // keeping them does not keep a whole read arena alive.
        if (p.lend) p.release = this.intake.lend(data);
        else if (data.length >= SMALL_READ) this.intake.keep(data);
        p.single = p.lend || data.length >= SMALL_READ ? data : new Uint8Array(data);
        return;
      }
      p.buf = new Uint8Array(p.length);
      this.unsingle(p);
    }
    p.buf.set(data, p.bufPos + rel);
  }

  private readHole(p: Pending, offset: number, size: number): void {
    const rel = offset - p.offset;
    if (rel < 0 || rel + size > p.length) {
      throw new ProtocolError(`read hole ${offset}+${size} lies outside the request ${p.offset}+${p.length}`);
    }
    p.covered += size;
    if (p.buf === undefined) {
      p.buf = new Uint8Array(p.length); // zero-filled: the hole is already there
      this.unsingle(p);
      return;
    }
    p.buf.fill(0, p.bufPos + rel, p.bufPos + rel + size);
  }

  /** A second chunk arrived: the single view is copied into `p.buf` and given back. */
  private unsingle(p: Pending): void {
    if (p.single) p.buf!.set(p.single);
    p.single = undefined;
    p.release?.();
    p.release = undefined;
  }

  private complete(p: Pending): void {
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
    if (!p.abandoned) {
      if (p.error) p.reject(p.error);
      else if (p.cmd === Command.READ) {
        if (p.covered < p.length) p.reject(new NbdErrnoError(Errno.EIO, `the server answered ${p.covered} of ${p.length} bytes of a read`));
        else if (p.lend) {
          p.resolve({ data: p.single ?? p.buf, release: p.release ?? noop });
          p.release = undefined; // the caller's now
        } else p.resolve(p.single ?? p.buf);
      } else if (p.cmd === Command.BLOCK_STATUS) {
        if (p.extents!.size === 0) p.reject(new ProtocolError('block status reply without any status chunk'));
        else p.resolve(p.extents);
      } else p.resolve(undefined);
    }
    p.release?.(); // not handed out (error, abandoned): give the view back
    if (this.staged > 0 && !this.holding()) this.scheduleFlush();
    if (this.pending.size === 0) {
      if (this.shutdownSeen) {
        // ESHUTDOWN: the spec asks for a soft disconnect once nothing is in flight.
        this.sendDisc();
      }
      const idle = this.idle;
      this.idle = undefined;
      idle?.resolve();
    }
  }

  // ------------------------------------------------------------ failure

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.closing = true;
    this.out = [];
    this.runStart = -1;
    this.staged = 0;
    this.ending = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      p.release?.();
      if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
      if (!p.abandoned) p.reject(err);
    }
    const idle = this.idle;
    this.idle = undefined;
    idle?.resolve();
    this.socket.destroy();
  }

  private readonly onError = (err: Error): void => this.fail(err);

  private readonly onClose = (): void => {
    if (!this.failure) {
      const clean = this.discSent && this.pending.size === 0;
      this.fail(clean ? new Error('the connection is closed') : new Error('the server closed the connection'));
    }
    this.closed.resolve();
  };
}

function noop(): void {}

function checkedOffset(offset: bigint): number {
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`chunk offset ${offset} is out of range`);
  return Number(offset);
}

function nameOfCmd(cmd: number): string {
  return cmd === Command.TRIM ? 'trim' : cmd === Command.WRITE_ZEROES ? 'zero' : cmd === Command.CACHE ? 'cache' : `command ${cmd}`;
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

function raceSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
