// The transmission phase of one connection, without I/O: each decoded request is
// validated, handed to the device without waiting for it, and answered with reply
// values (replies.ts) in completion order. Device methods may return values or
// promises; a synchronous device is answered within the same call.
import {
  AllocationState,
  type ClientFrame,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  Errno,
  isKnownErrno,
  isPromise,
  Limits,
  NbdErrnoError,
  toNbdErrno,
  writeZeroes,
} from '@nbd/protocol';
import type { DeviceExtent, ExtentsOptions, IoOptions, Loan, MaybePromise, ZeroOptions } from './device.js';
import { ExtentList } from './extents.js';
import type { Logger } from './logger.js';
import type { ReadSegment, Reply, ReplyOut } from './replies.js';
import type { Session } from './session.js';
import { validateRequest } from './validate.js';

/** What the engine tells its connection. */
export interface EngineHooks {
  /** The device is done with a WRITE payload that `request` reported as 'held'. */
  release(payload: Uint8Array): void;
  /** A request was answered: in-flight counts went down. */
  settled(): void;
}

/** What became of one request frame. */
export type RequestOutcome =
  /** Its payload went to the device; `hooks.release` gives it back. */
  | 'held'
  /** Answered or dispatched; its payload (if any) is free now. */
  | 'done'
  /** NBD_CMD_DISC: no more requests; close once in-flight ones are answered. */
  | 'disconnect';

type RequestFrame = Extract<ClientFrame, { kind: 'request' }>;

/** One dispatched request. */
interface Pending {
  cookie: bigint;
  type: number;
  flags: number;
  /** The request's offset as sent (echoed in extended chunks). */
  wireOffset: bigint;
  offset: number;
  length: number;
  /** Bytes counted against the in-flight byte limit. */
  cost: number;
  /** BLOCK_STATUS: the contexts asked for. */
  contextIds: number[];
}

/** Reads at least this long ask the device's extents, to send holes as OFFSET_HOLE chunks. */
const SPARSE_READ_MIN = 64 * 1024;
/** Work buffer size for emulated CACHE. */
const SCRATCH = 1024 * 1024;

export class TransmissionEngine {
  /** Requests dispatched and not yet answered. */
  inFlight = 0;
  /** READ lengths and WRITE payloads of those requests. */
  inFlightBytes = 0;
  private accepting = true;
  private shuttingDown = false;
  private readonly ac = new AbortController();
  private readonly opts: IoOptions;
  private readonly fuaOpts: IoOptions;
  private readonly extentOpts: ExtentsOptions;

  constructor(
    private readonly session: Session,
    private readonly out: ReplyOut,
    private readonly hooks: EngineHooks,
    private readonly logger: Logger,
    private readonly peer: string,
  ) {
    const signal = this.ac.signal;
    this.opts = { fua: false, signal };
    this.fuaOpts = { fua: true, signal };
    this.extentOpts = { fua: false, signal, reqOne: false };
  }

  /** Validates and dispatches one request frame. */
  request(frame: RequestFrame): RequestOutcome {
    const req = frame.request;
    if (req.type === Command.DISC) {
      this.accepting = false;
      return 'disconnect';
    }
    if (!this.accepting) return 'done';
    if (this.shuttingDown) return this.reject(req, Errno.ESHUTDOWN, 'server is shutting down');
    let length = req.length;
    let contextIds = [...this.session.metaContexts.keys()];
    if (req.type === Command.BLOCK_STATUS && (req.flags & CommandFlag.PAYLOAD_LEN) !== 0 && frame.payload) {
      // Extended BLOCK_STATUS payload: the effect length and the contexts wanted.
      try {
        const p = decodeBlockStatusPayload(frame.payload);
        length = p.effectLength;
        const unknown = p.contextIds.find((id) => !this.session.metaContexts.has(id));
        if (unknown !== undefined) return this.reject(req, Errno.EINVAL, `meta context ${unknown} was not selected`);
        if (p.contextIds.length > 0) contextIds = p.contextIds;
      } catch (e) {
        return this.reject(req, Errno.EINVAL, (e as Error).message);
      }
    }
    const rejection = validateRequest(req, length, this.session, frame.oversized === true);
    if (rejection !== undefined) return this.reject(req, rejection.errno, rejection.message);

    const p: Pending = {
      cookie: req.cookie,
      type: req.type,
      flags: req.flags,
      wireOffset: req.offset,
      offset: Number(req.offset),
      length: Number(length),
      cost: req.type === Command.READ || req.type === Command.WRITE ? Number(length) : 0,
      contextIds,
    };
    this.inFlight++;
    this.inFlightBytes += p.cost;
    if (p.type === Command.WRITE) return this.write(p, frame.payload!);
    try {
      this.dispatch(p);
    } catch (e) {
      this.fail(p, e);
    }
    return 'done';
  }

  /** Server shutdown: requests in flight and new ones are answered with ESHUTDOWN. */
  shutdown(): void {
    this.shuttingDown = true;
  }

  /** No further request is read (the client disconnected, or the stream ended). */
  stop(): void {
    this.accepting = false;
  }

  /** The connection is gone: device calls still running see their signal abort. */
  abort(): void {
    this.ac.abort();
  }

  private reject(req: { cookie: bigint; type: number; offset: bigint }, errno: number, message: string): 'done' {
    this.logger.debug(`${this.peer}: request ${req.type} rejected: ${message}`);
    this.out.send({ kind: 'error', cookie: req.cookie, offset: req.offset, type: req.type, errno, message });
    return 'done';
  }

  private write(p: Pending, payload: Uint8Array): RequestOutcome {
    const dev = this.session.device;
    let r: MaybePromise<void>;
    try {
      r = dev.writeAt!(payload, p.offset, (p.flags & CommandFlag.FUA) !== 0 && dev.fua ? this.fuaOpts : this.opts);
    } catch (e) {
      this.fail(p, e);
      return 'done';
    }
    if (!isPromise(r)) {
      this.afterWrite(p);
      return 'done';
    }
    r.then(
      () => {
        this.hooks.release(payload);
        this.afterWrite(p);
      },
      (e: unknown) => {
        this.hooks.release(payload);
        this.fail(p, e);
      },
    );
    return 'held';
  }

  private dispatch(p: Pending): void {
    const dev = this.session.device;
    const fua = (p.flags & CommandFlag.FUA) !== 0;
    switch (p.type) {
      case Command.READ:
        if (dev.extents && this.session.structured && (p.flags & CommandFlag.DF) === 0 && p.length >= SPARSE_READ_MIN) {
          this.step(p, dev.extents(p.offset, p.length, this.extentOpts), this.readSparse);
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
        } else this.step(p, this.writeZeroes(p), this.afterWrite);
        return;
      case Command.CACHE:
        this.step(p, dev.cache ? dev.cache(p.offset, p.length, this.opts) : this.readAndDrop(p), this.ok);
        return;
      case Command.BLOCK_STATUS: {
        const reqOne = (p.flags & CommandFlag.REQ_ONE) !== 0;
        const r: MaybePromise<DeviceExtent[]> = dev.extents
          ? dev.extents(p.offset, p.length, reqOne ? { ...this.extentOpts, reqOne } : this.extentOpts)
          : [{ length: p.length, flags: 0 }];
        this.step(p, r, this.blockStatus);
        return;
      }
    }
    throw new Error(`internal: command ${p.type} passed validation`);
  }

  /** Runs `next` once `r` settles (now, if it is not a promise); a failure answers with an error. */
  private step<T>(p: Pending, r: MaybePromise<T>, next: (p: Pending, v: T) => void): void {
    if (!isPromise(r)) {
      next.call(this, p, r);
      return;
    }
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
  }

  // ------------------------------------------------------------ commands

  private read(p: Pending): void {
    const dev = this.session.device;
    const loan = dev.lend?.(p.offset, p.length);
    if (loan !== undefined) {
      this.sendLoan(p, loan);
      return;
    }
    const data = this.out.readBuffer(p.length);
    let r: MaybePromise<void>;
    try {
      r = dev.readAt(data, p.offset, this.opts);
    } catch (e) {
      this.out.discard(data);
      throw e;
    }
    if (!isPromise(r)) this.answer(p, { kind: 'data', cookie: p.cookie, offset: p.wireOffset, data });
    else {
      r.then(
        () => this.answer(p, { kind: 'data', cookie: p.cookie, offset: p.wireOffset, data }),
        (e: unknown) => {
          this.out.discard(data);
          this.fail(p, e);
        },
      );
    }
  }

  /** Zero-copy READ: the device's own memory goes out as it is. */
  private sendLoan(p: Pending, loan: Loan): void {
    let total = 0;
    for (const v of loan.views) total += v.length;
    if (total !== p.length) {
      loan.release();
      this.fail(p, new Error(`device lent ${total} bytes for a ${p.length}-byte read`));
      return;
    }
    this.answer(
      p,
      { kind: 'loan', cookie: p.cookie, offset: p.wireOffset, views: loan.views, release: () => loan.release() },
      loan.release,
    );
  }

  private readonly readSparse = (p: Pending, extents: DeviceExtent[]): void => {
    // Runs of data and zeroes covering the request; whatever extents miss is data.
    const runs: { offset: number; length: number; zero: boolean }[] = [];
    let at = p.offset;
    const end = p.offset + p.length;
    for (const e of extents) {
      if (at >= end || !(e.length > 0)) break;
      const n = Math.min(e.length, end - at);
      const zero = (e.flags & AllocationState.ZERO) !== 0;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.zero === zero) last.length += n;
      else runs.push({ offset: at, length: n, zero });
      at += n;
    }
    if (at < end) {
      const last = runs[runs.length - 1];
      if (last !== undefined && !last.zero) last.length += end - at;
      else runs.push({ offset: at, length: end - at, zero: false });
    }
    if (runs.length === 1 && !runs[0]!.zero) this.read(p);
    else void this.readRuns(p, runs);
  };

  private async readRuns(p: Pending, runs: { offset: number; length: number; zero: boolean }[]): Promise<void> {
    const segments: ReadSegment[] = [];
    try {
      for (const run of runs) {
        if (run.zero) segments.push({ offset: run.offset, hole: run.length });
        else {
          const data = this.out.readBuffer(run.length);
          segments.push({ offset: run.offset, data });
          await this.session.device.readAt(data, run.offset, this.opts);
        }
      }
    } catch (e) {
      for (const s of segments) if ('data' in s) this.out.discard(s.data);
      this.fail(p, e);
      return;
    }
    // Sent together only once every read succeeded, so an error never follows data.
    this.answer(p, { kind: 'segments', cookie: p.cookie, offset: p.wireOffset, segments }, () => {
      for (const s of segments) if ('data' in s) this.out.discard(s.data);
    });
  }

  private readonly afterWrite = (p: Pending): void => {
    const dev = this.session.device;
    if ((p.flags & CommandFlag.FUA) !== 0 && !dev.fua && dev.sync) this.step(p, dev.sync(this.opts), this.ok);
    else this.ok(p);
  };

  private writeZeroes(p: Pending): Promise<void> {
    const dev = this.session.device;
    return writeZeroes(p.offset, p.length, (zeroes, at) => dev.writeAt!(zeroes, at, this.opts));
  }

  private async readAndDrop(p: Pending): Promise<void> {
    const buf = new Uint8Array(Math.min(SCRATCH, p.length));
    for (let done = 0; done < p.length; ) {
      const n = Math.min(buf.length, p.length - done);
      await this.session.device.readAt(buf.subarray(0, n), p.offset + done, this.opts);
      done += n;
    }
  }

  private readonly blockStatus = (p: Pending, extents: DeviceExtent[]): void => {
    // Clip to the request, drop what follows a bad extent, merge equal neighbours, cap the count.
    const list = new ExtentList(0, p.length, { reqOne: (p.flags & CommandFlag.REQ_ONE) !== 0, maxCount: Limits.MAX_EXTENTS_PER_CHUNK });
    for (const e of extents) {
      if (!(e.length > 0) || !Number.isSafeInteger(e.length) || !list.push(e.length, e.flags >>> 0)) break;
    }
    if (list.extents.length === 0) this.fail(p, new Error('device returned no extents'));
    else this.answer(p, { kind: 'block-status', cookie: p.cookie, offset: p.wireOffset, contextIds: p.contextIds, extents: list.extents });
  };

  // ------------------------------------------------------------ answers

  private readonly ok = (p: Pending): void => {
    this.answer(p, { kind: 'ok', cookie: p.cookie, offset: p.wireOffset });
  };

  /** Sends `reply` for `p` (or ESHUTDOWN when shutting down: `unused` gives back what it held). */
  private answer(p: Pending, reply: Reply, unused?: () => void): void {
    if (this.shuttingDown) {
      unused?.();
      if (reply.kind === 'data') this.out.discard(reply.data);
      this.fail(p, undefined);
      return;
    }
    this.out.send(reply);
    this.settle(p);
  }

  /** Answers a dispatched request with the errno `err` maps to (ESHUTDOWN while shutting down). */
  private fail(p: Pending, err: unknown): void {
    let errno: number = Errno.ESHUTDOWN;
    let message = 'server is shutting down';
    if (!this.shuttingDown) {
      errno = toNbdErrno(err);
      if (!isKnownErrno(errno)) errno = Errno.EIO;
      // The reply carries the errno already: an NbdErrnoError's text without its errno name.
      const text = err instanceof NbdErrnoError ? err.detail || err.message : err instanceof Error ? err.message : 'device error';
      message = text.slice(0, 200);
      this.logger.debug(`${this.peer}: request ${p.type} at ${p.offset}+${p.length} failed: ${message}`);
    }
    this.out.send({ kind: 'error', cookie: p.cookie, offset: p.wireOffset, type: p.type, errno, message });
    this.settle(p);
  }

  private settle(p: Pending): void {
    this.inFlight--;
    this.inFlightBytes -= p.cost;
    this.hooks.settled();
  }
}
