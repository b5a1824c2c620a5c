// The transmission phase of one connection. The read loop validates and
// dispatches each request without awaiting the device; replies go out in
// completion order through one writer (corked per tick, so a burst of replies
// is one writev). Caps on requests and bytes in flight, and on unsent reply
// bytes, pause reading the socket instead of growing memory.
import type { Duplex } from 'node:stream';
import {
  AllocationState,
  ChunkType,
  type ClientFrame,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  encodeChunk,
  Errno,
  Limits,
  ReplyFlag,
  type Request,
  Size,
  toNbdErrno,
  writeChunkHeader,
  writeSimpleReply,
} from '@nbd/protocol';
import type { Extent, ExtentsOptions, IoOptions, Loan, MaybePromise, ZeroOptions } from './device.js';
import { BufferPool } from './buffer-pool.js';
import type { RequestReader } from './request-reader.js';
import type { Logger } from './logger.js';
import type { Session } from './session.js';
import { validateRequest } from './validate.js';

export interface TransmissionLimits {
  /** Requests dispatched but not yet answered before reading pauses. */
  maxInFlight: number;
  /** Bytes (READ lengths + WRITE payloads in flight, and reply bytes not yet sent) before reading pauses. */
  maxInFlightBytes: number;
}

/** One dispatched request. */
interface Pending {
  cookie: bigint;
  type: number;
  flags: number;
  /** The request's offset as sent (echoed in extended chunks). */
  wireOffset: bigint;
  offset: number;
  length: number;
  /** Bytes counted against maxInFlightBytes. */
  cost: number;
}

type Step = (p: Pending) => void;

const KNOWN_ERRNOS = new Set<number>(Object.values(Errno));
/** Reads at least this long ask the device's extents, to send holes as OFFSET_HOLE chunks. */
const SPARSE_READ_MIN = 64 * 1024;
/** Work buffer size for emulated WRITE_ZEROES and CACHE. */
const SCRATCH = 1024 * 1024;
let zeroes: Uint8Array | undefined;
/** READ reply buffers of at least this size are pooled (smaller ones come from Node's slab). */
const POOL_MIN = 16 * 1024;
const pool = new BufferPool(32 * 1024 * 1024);
/**
 * Reply bytes queued in the socket before reading pauses, and the level at which
 * it resumes. Small on purpose: replies waiting in our memory only add cache
 * misses; requests waiting in the kernel's socket buffer cost nothing.
 */
const REPLY_HIGH_WATER = 4 * 1024 * 1024;
const REPLY_LOW_WATER = 1024 * 1024;

function isPromise(v: unknown): v is Promise<unknown> {
  return v !== undefined && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

export class Transmission {
  /** Requests dispatched and not yet answered (for tests and monitoring). */
  inFlight = 0;
  inFlightBytes = 0;
  private corked = false;
  /** DISC received or the stream ended: answer what is in flight, then close. */
  private closing = false;
  private shuttingDown = false;
  private socketClosed = false;
  private readonly finished: PromiseWithResolvers<void> = Promise.withResolvers();
  private readonly ac = new AbortController();
  private readonly opts: IoOptions;
  private readonly fuaOpts: IoOptions;
  private readonly extentOpts: ExtentsOptions;
  private readonly hasExtents: boolean;

  constructor(
    private readonly socket: Duplex,
    private readonly src: RequestReader,
    private readonly session: Session,
    private readonly limits: TransmissionLimits,
    private readonly logger: Logger,
    private readonly peer: string,
  ) {
    const signal = this.ac.signal;
    this.opts = { fua: false, signal };
    this.fuaOpts = { fua: true, signal };
    this.extentOpts = { fua: false, signal, reqOne: false };
    this.hasExtents = session.device.extents !== undefined;
    socket.on('drain', () => this.maybeResume());
    socket.on('close', () => {
      this.socketClosed = true;
      this.ac.abort();
      this.maybeDone();
    });
  }

  /** Resolves once the socket closed and no request is in flight. */
  get done(): Promise<void> {
    return this.finished.promise;
  }

  start(): void {
    this.src.startPush(
      (frame) => this.onFrame(frame),
      (err) => {
        if (err !== undefined) this.logger.warn(`${this.peer}: ${err.message}; closing`);
        this.closing = true;
        this.maybeClose();
      },
    );
  }

  /** Server shutdown: requests in flight and new ones get ESHUTDOWN, then the connection closes. */
  shutdown(): void {
    this.shuttingDown = true;
    this.maybeClose();
  }

  // ------------------------------------------------------------ read loop

  private onFrame(frame: ClientFrame): void {
    if (frame.kind !== 'request') return;
    // A payload lives in a reader arena, recycled once every payload in it is released.
    if (!this.request(frame) && frame.payload !== undefined) this.src.release(frame.payload);
  }

  /** Handles one request; true when its payload went to the device (which then releases it). */
  private request(frame: ClientFrame & { kind: 'request' }): boolean {
    const req = frame.request;
    if (req.type === Command.DISC) {
      // Reading goes on (later frames are dropped) so the client's EOF is seen and the socket closes.
      this.closing = true;
      this.maybeClose();
      return false;
    }
    if (this.closing) return false;
    if (this.shuttingDown) {
      this.replyError(req, Errno.ESHUTDOWN, 'server is shutting down');
      return false;
    }
    let length = req.length;
    if (req.type === Command.BLOCK_STATUS && (req.flags & CommandFlag.PAYLOAD_LEN) !== 0 && frame.payload) {
      // Extended BLOCK_STATUS payload: the effect length and the contexts wanted.
      try {
        const p = decodeBlockStatusPayload(frame.payload);
        length = p.effectLength;
        for (const id of p.contextIds) {
          if (!this.session.metaContexts.has(id)) {
            this.replyError(req, Errno.EINVAL, `meta context ${id} was not selected`);
            return false;
          }
        }
      } catch (e) {
        this.replyError(req, Errno.EINVAL, (e as Error).message);
        return false;
      }
    }
    const rejection = validateRequest(req, length, this.session, frame.oversized === true);
    if (rejection !== undefined) {
      this.logger.debug(`${this.peer}: request ${req.type} rejected: ${rejection.message}`);
      this.replyError(req, rejection.errno, rejection.message);
      return false;
    }

    const p: Pending = {
      cookie: req.cookie,
      type: req.type,
      flags: req.flags,
      wireOffset: req.offset,
      offset: Number(req.offset),
      length: Number(length),
      cost: req.type === Command.READ || req.type === Command.WRITE ? Number(length) : 0,
    };
    this.inFlight++;
    this.inFlightBytes += p.cost;
    if (!this.canRead()) this.src.pause();
    if (p.type === Command.WRITE) {
      this.write(p, frame.payload!);
      return true;
    }
    try {
      this.dispatch(p);
    } catch (e) {
      this.fail(p, e);
    }
    return false;
  }

  private write(p: Pending, payload: Uint8Array): void {
    const dev = this.session.device;
    let r: MaybePromise<void>;
    try {
      r = dev.writeAt!(payload, p.offset, (p.flags & CommandFlag.FUA) !== 0 && dev.fua ? this.fuaOpts : this.opts);
    } catch (e) {
      this.src.release(payload);
      this.fail(p, e);
      return;
    }
    if (isPromise(r)) {
      const release = () => this.src.release(payload);
      r.then(release, release);
    } else this.src.release(payload);
    try {
      this.step(p, r, this.afterWrite);
    } catch (e) {
      this.fail(p, e);
    }
  }

  private dispatch(p: Pending): void {
    const dev = this.session.device;
    const fua = (p.flags & CommandFlag.FUA) !== 0;
    switch (p.type) {
      case Command.READ:
        if (this.hasExtents && this.session.structured && (p.flags & CommandFlag.DF) === 0 && p.length >= SPARSE_READ_MIN) {
          this.step(p, dev.extents!(p.offset, p.length, this.extentOpts), this.readSparse);
        } else this.read(p);
        return;
      case Command.FLUSH:
        this.step(p, dev.sync!(this.opts), this.ok);
        return;
      case Command.TRIM:
        this.step(p, dev.trim!(p.offset, p.length, fua && dev.fua ? this.fuaOpts : this.opts), this.afterWrite);
        return;
      case Command.WRITE_ZEROES:
        if (dev.zero) {
          const o: ZeroOptions = {
            fua: fua && dev.fua === true,
            signal: this.ac.signal,
            noHole: (p.flags & CommandFlag.NO_HOLE) !== 0,
            fast: (p.flags & CommandFlag.FAST_ZERO) !== 0,
          };
          this.step(p, dev.zero(p.offset, p.length, o), this.afterWrite);
        } else {
          this.step(p, this.writeZeroes(p), this.afterWrite);
        }
        return;
      case Command.CACHE:
        this.step(p, dev.cache ? dev.cache(p.offset, p.length, this.opts) : this.readAndDrop(p), this.ok);
        return;
      case Command.BLOCK_STATUS: {
        const reqOne = (p.flags & CommandFlag.REQ_ONE) !== 0;
        const r: MaybePromise<Extent[]> = dev.extents
          ? dev.extents(p.offset, p.length, reqOne ? { ...this.extentOpts, reqOne } : this.extentOpts)
          : [{ length: p.length, flags: 0 }];
        this.step(p, r, this.blockStatus);
        return;
      }
    }
    throw new Error(`internal: command ${p.type} passed validation`);
  }

  /** Runs `next` after `r` settles (now, if it is not a promise); a failure answers with an error. */
  private step<T>(p: Pending, r: MaybePromise<T>, next: (p: Pending, v: T) => void): void {
    if (isPromise(r)) {
      r.then(
        (v) => {
          try {
            next.call(this, p, v);
          } catch (e) {
            this.fail(p, e);
          }
        },
        (e: unknown) => this.fail(p, e),
      );
    } else next.call(this, p, r);
  }

  // ------------------------------------------------------------ commands

  private read(p: Pending): void {
    const s = this.session;
    // Header, the OFFSET_DATA offset field, and the data: one buffer, filled in place.
    const head = !s.structured ? Size.SIMPLE_REPLY : (s.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK) + 8;
    const size = head + p.length;
    if (s.device.lend !== undefined) {
      const loan = s.device.lend(p.offset, p.length);
      if (loan !== undefined) {
        this.sendLoan(p, head, loan);
        return;
      }
    }
    const buf = size >= POOL_MIN ? pool.take(size) : Buffer.allocUnsafe(size);
    this.writeReadHeader(p, buf);
    const r = s.device.readAt(buf.subarray(head), p.offset, this.opts);
    if (isPromise(r)) r.then(() => this.sendAndEnd(p, buf), (e: unknown) => this.fail(p, e));
    else this.sendAndEnd(p, buf);
  }

  /** Zero-copy READ reply: our header, then the device's own memory; the loan ends once the socket is done with it. */
  private sendLoan(p: Pending, head: number, loan: Loan): void {
    let total = 0;
    for (const v of loan.views) total += v.length;
    if (this.shuttingDown || total !== p.length) {
      loan.release();
      this.fail(p, this.shuttingDown ? undefined : new Error(`device lent ${total} bytes for a ${p.length}-byte read`));
      return;
    }
    const h = Buffer.allocUnsafe(head);
    this.writeReadHeader(p, h);
    this.send(h);
    const views = loan.views;
    const last = views.length - 1;
    for (let i = 0; i < last; i++) this.send(views[i]!);
    this.send(views[last]!, (ok) => {
      loan.release();
      if (ok && this.socket.writableLength < REPLY_LOW_WATER) this.maybeResume();
    });
    this.end(p);
  }

  /** Simple reply header, or OFFSET_DATA chunk header + offset, for a successful READ of `p`. */
  private writeReadHeader(p: Pending, buf: Buffer): void {
    const s = this.session;
    if (!s.structured) writeSimpleReply(buf, 0, { error: 0, cookie: p.cookie });
    else {
      const n = writeChunkHeader(
        buf,
        0,
        { flags: ReplyFlag.DONE, type: ChunkType.OFFSET_DATA, cookie: p.cookie, offset: p.wireOffset, length: 8 + p.length },
        s.extended,
      );
      buf.writeBigUInt64BE(p.wireOffset, n);
    }
  }

  private readonly readSparse = (p: Pending, extents: Extent[]): void => {
    // Segments of data and zeroes covering the request; whatever extents miss is data.
    const segs: { offset: number; length: number; zero: boolean }[] = [];
    let at = p.offset;
    const end = p.offset + p.length;
    for (const e of extents) {
      if (at >= end) break;
      if (!(e.length > 0)) break;
      const n = Math.min(e.length, end - at);
      const zero = (e.flags & AllocationState.ZERO) !== 0;
      const last = segs[segs.length - 1];
      if (last !== undefined && last.zero === zero) last.length += n;
      else segs.push({ offset: at, length: n, zero });
      at += n;
    }
    if (at < end) {
      const last = segs[segs.length - 1];
      if (last !== undefined && !last.zero) last.length += end - at;
      else segs.push({ offset: at, length: end - at, zero: false });
    }
    if (segs.length === 1 && !segs[0]!.zero) {
      this.read(p);
      return;
    }
    void this.readChunks(p, segs);
  };

  private async readChunks(p: Pending, segs: { offset: number; length: number; zero: boolean }[]): Promise<void> {
    const ext = this.session.extended;
    const hsize = ext ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
    const chunks: Buffer[] = [];
    try {
      for (let i = 0; i < segs.length; i++) {
        const seg = segs[i]!;
        const flags = i === segs.length - 1 ? ReplyFlag.DONE : 0;
        const off = BigInt(seg.offset);
        if (seg.zero) {
          // u64 offset | u32 hole size
          const b = Buffer.allocUnsafe(hsize + 12);
          writeChunkHeader(b, 0, { flags, type: ChunkType.OFFSET_HOLE, cookie: p.cookie, offset: p.wireOffset, length: 12 }, ext);
          b.writeBigUInt64BE(off, hsize);
          b.writeUInt32BE(seg.length, hsize + 8);
          chunks.push(b);
        } else {
          // u64 offset | data
          const b = Buffer.allocUnsafe(hsize + 8 + seg.length);
          writeChunkHeader(b, 0, { flags, type: ChunkType.OFFSET_DATA, cookie: p.cookie, offset: p.wireOffset, length: 8 + seg.length }, ext);
          b.writeBigUInt64BE(off, hsize);
          await this.session.device.readAt(b.subarray(hsize + 8), seg.offset, this.opts);
          chunks.push(b);
        }
      }
    } catch (e) {
      this.fail(p, e);
      return;
    }
    // Sent together only once every read succeeded, so an error never follows data.
    if (this.shuttingDown) {
      this.fail(p, undefined);
      return;
    }
    for (const c of chunks) this.send(c);
    this.end(p);
  }

  private readonly afterWrite: Step = (p: Pending) => {
    const dev = this.session.device;
    if ((p.flags & CommandFlag.FUA) !== 0 && !dev.fua && dev.sync) this.step(p, dev.sync(this.opts), this.ok);
    else this.ok(p);
  };

  private async writeZeroes(p: Pending): Promise<void> {
    const dev = this.session.device;
    zeroes ??= new Uint8Array(SCRATCH);
    for (let done = 0; done < p.length; ) {
      const n = Math.min(SCRATCH, p.length - done);
      await dev.writeAt!(zeroes.subarray(0, n), p.offset + done, this.opts);
      done += n;
    }
  }

  private async readAndDrop(p: Pending): Promise<void> {
    const buf = Buffer.allocUnsafe(Math.min(SCRATCH, p.length));
    for (let done = 0; done < p.length; ) {
      const n = Math.min(buf.length, p.length - done);
      await this.session.device.readAt(buf.subarray(0, n), p.offset + done, this.opts);
      done += n;
    }
  }

  private readonly blockStatus = (p: Pending, extents: Extent[]) => {
    const s = this.session;
    const reqOne = (p.flags & CommandFlag.REQ_ONE) !== 0;
    // Clip to the request, drop empty extents, merge equal neighbours, cap the count.
    const out: { length: number; flags: number }[] = [];
    let left = p.length;
    for (const e of extents) {
      if (left <= 0) break;
      if (!(e.length > 0) || !Number.isSafeInteger(e.length)) break;
      const n = Math.min(e.length, left);
      const flags = e.flags >>> 0;
      const last = out[out.length - 1];
      if (last !== undefined && last.flags === flags) last.length += n;
      else {
        if (reqOne && last !== undefined) break;
        if (out.length >= Limits.MAX_EXTENTS_PER_CHUNK) break;
        out.push({ length: n, flags });
      }
      left -= n;
    }
    if (out.length === 0) {
      this.fail(p, new Error('device returned no extents'));
      return;
    }
    if (this.shuttingDown) {
      this.fail(p, undefined);
      return;
    }
    const ids = [...s.metaContexts.keys()];
    ids.forEach((id, i) => {
      const flags = i === ids.length - 1 ? ReplyFlag.DONE : 0;
      if (s.extended) {
        // u32 context id | u32 count | n × (u64 length | u64 flags)
        const body = 8 + 16 * out.length;
        const b = Buffer.allocUnsafe(Size.EXTENDED_CHUNK + body);
        let pos = writeChunkHeader(b, 0, { flags, type: ChunkType.BLOCK_STATUS_EXT, cookie: p.cookie, offset: p.wireOffset, length: body }, true);
        pos = b.writeUInt32BE(id, pos);
        pos = b.writeUInt32BE(out.length, pos);
        for (const e of out) {
          pos = b.writeBigUInt64BE(BigInt(e.length), pos);
          pos = b.writeBigUInt64BE(BigInt(e.flags), pos);
        }
        this.send(b);
      } else {
        // u32 context id | n × (u32 length | u32 flags)
        const body = 4 + 8 * out.length;
        const b = Buffer.allocUnsafe(Size.STRUCTURED_CHUNK + body);
        let pos = writeChunkHeader(b, 0, { flags, type: ChunkType.BLOCK_STATUS, cookie: p.cookie, length: body }, false);
        pos = b.writeUInt32BE(id, pos);
        for (const e of out) {
          pos = b.writeUInt32BE(e.length, pos);
          pos = b.writeUInt32BE(e.flags, pos);
        }
        this.send(b);
      }
    });
    this.end(p);
  };

  // ------------------------------------------------------------ replies

  private readonly ok: Step = (p: Pending) => {
    if (this.shuttingDown) {
      this.fail(p, undefined);
      return;
    }
    if (this.session.extended) {
      this.send(encodeChunk(p.cookie, { kind: 'none' }, { extended: true, offset: p.wireOffset }));
    } else {
      const b = Buffer.allocUnsafe(Size.SIMPLE_REPLY);
      writeSimpleReply(b, 0, { error: 0, cookie: p.cookie });
      this.send(b);
    }
    this.end(p);
  };

  private sendAndEnd(p: Pending, buf: Buffer): void {
    if (this.shuttingDown) this.fail(p, undefined);
    else {
      if (buf.length >= POOL_MIN) {
        this.send(buf, (ok) => {
          // A failed write may leave the buffer referenced by the dying socket: not reused.
          if (!ok) return;
          pool.give(buf);
          if (this.socket.writableLength < REPLY_LOW_WATER) this.maybeResume();
        });
      }
      else this.send(buf);
      this.end(p);
    }
  }

  /** Answers a dispatched request with the error `err` maps to (ESHUTDOWN while shutting down). */
  private fail(p: Pending, err: unknown): void {
    let errno: number = Errno.ESHUTDOWN;
    let message = 'server is shutting down';
    if (!this.shuttingDown) {
      errno = toNbdErrno(err);
      if (!KNOWN_ERRNOS.has(errno) || errno === 0) errno = Errno.EIO;
      message = err instanceof Error ? err.message.slice(0, 200) : 'device error';
      this.logger.debug(`${this.peer}: request ${p.type} at ${p.offset}+${p.length} failed: ${message}`);
    }
    this.replyError({ cookie: p.cookie, type: p.type, offset: p.wireOffset }, errno, message);
    this.end(p);
  }

  private replyError(req: Pick<Request, 'cookie' | 'type' | 'offset'>, errno: number, message: string): void {
    const s = this.session;
    if (s.extended || (s.structured && (req.type === Command.READ || req.type === Command.BLOCK_STATUS))) {
      this.send(encodeChunk(req.cookie, { kind: 'error', error: errno, message }, { extended: s.extended, offset: req.offset }));
    } else {
      const b = Buffer.allocUnsafe(Size.SIMPLE_REPLY);
      writeSimpleReply(b, 0, { error: errno, cookie: req.cookie });
      this.send(b);
    }
  }

  /** `done` runs once the socket is done with `buf`: ok = written, false = dropped or failed. */
  private send(buf: Uint8Array, done?: (ok: boolean) => void): void {
    const s = this.socket;
    if (this.socketClosed || s.destroyed || !s.writable) {
      done?.(false);
      return;
    }
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(this.uncork);
    }
    if (done === undefined) s.write(buf);
    else s.write(buf, (err) => done(!err));
  }

  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
    if (!this.canRead()) this.src.pause();
  };

  // ------------------------------------------------------------ accounting

  private end(p: Pending): void {
    this.inFlight--;
    this.inFlightBytes -= p.cost;
    if (this.closing || this.shuttingDown) this.maybeClose();
    else this.maybeResume();
    this.maybeDone();
  }

  private canRead(): boolean {
    return (
      this.inFlight < this.limits.maxInFlight &&
      this.inFlightBytes < this.limits.maxInFlightBytes &&
      this.src.pinnedBytes < this.limits.maxInFlightBytes &&
      this.socket.writableLength < Math.min(this.limits.maxInFlightBytes, REPLY_HIGH_WATER)
    );
  }

  private maybeResume(): void {
    if (this.src.isPaused && !this.closing && !this.shuttingDown && this.canRead()) this.src.resume();
  }

  private maybeClose(): void {
    if (this.inFlight > 0) return;
    if (!this.socketClosed && !this.socket.destroyed && !this.socket.writableEnded) {
      this.socket.end();
      // Drop whatever else arrives, but read on to see the peer's EOF.
      this.closing = true;
      this.src.resume();
      // A peer that never reads the rest of our replies must not hold the connection forever.
      const t = setTimeout(() => this.socket.destroy(), 5000);
      t.unref();
    }
    this.maybeDone();
  }

  private maybeDone(): void {
    if (this.socketClosed && this.inFlight === 0) this.finished.resolve();
  }
}
