// The transmission phase of one connection, without I/O: each decoded request is
// validated, handed to the device without waiting for it, and answered with reply
// values (replies.ts) in completion order. Device methods may return values or
// promises; a synchronous device is answered within the same call. The engine owns
// the memory of a request until it is answered: the frame's payload lease (released
// once the device is done with it) and the READ buffers it leases from `ReplyOut`
// (sent, or released).
import {
  AllocationState,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  Errno,
  isKnownErrno,
  isPromise,
  Limits,
  NbdErrnoError,
  type Request,
  toNbdErrno,
  type ViewLease,
  writeZeroes,
} from '@nbd/protocol';
import type { Budget } from './budget.js';
import type { DeviceExtent, ExtentsOptions, IoOptions, Loan, MaybePromise, ZeroOptions } from './device.js';
import { readAndDrop } from './emulate.js';
import { ExtentList } from './extents.js';
import type { Logger } from './logger.js';
import type { ReadSegment, Reply, ReplyOut } from './replies.js';
import type { Session } from './session.js';
import { commandName, validateRequest } from './validate.js';

/** One decoded request, as the engine takes it. */
export interface RequestFrame {
  request: Request;
  /** The WRITE data, or an extended BLOCK_STATUS payload: the engine releases it once nothing reads it. */
  payload?: ViewLease | undefined;
  /** The decoder dropped a payload larger than the maximum. */
  oversized?: boolean | undefined;
}

/** What became of one request frame: 'disconnect' for NBD_CMD_DISC (close once in-flight requests are answered). */
export type RequestOutcome = 'next' | 'disconnect';

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

export class TransmissionEngine {
  private accepting = true;
  private shuttingDown = false;
  private readonly ac = new AbortController();
  private readonly opts: IoOptions;
  private readonly fuaOpts: IoOptions;
  private readonly extentOpts: ExtentsOptions;

  constructor(
    private readonly session: Session,
    private readonly out: ReplyOut,
    /** Counts what is in flight; answering a request reports to it. */
    private readonly budget: Budget,
    private readonly logger: Logger,
    private readonly peer: string,
  ) {
    const signal = this.ac.signal;
    this.opts = { fua: false, signal };
    this.fuaOpts = { fua: true, signal };
    this.extentOpts = { fua: false, signal, reqOne: false };
  }

  /** Validates and dispatches one request frame; its payload lease is the engine's from here on. */
  request(frame: RequestFrame): RequestOutcome {
    const { request: req, payload } = frame;
    if (req.type === Command.DISC) {
      payload?.release();
      this.accepting = false;
      return 'disconnect';
    }
    const p = this.admit(frame);
    if (p === undefined) payload?.release();
    else if (p.type === Command.WRITE && payload !== undefined) this.write(p, payload);
    else {
      payload?.release(); // a BLOCK_STATUS payload, already read
      try {
        this.dispatch(p);
      } catch (e) {
        this.fail(p, e);
      }
    }
    return 'next';
  }

  /** A request that may go to the device, counted in flight; undefined when it was refused (and answered) or dropped. */
  private admit({ request: req, payload, oversized }: RequestFrame): Pending | undefined {
    if (!this.accepting) return undefined;
    if (this.shuttingDown) return this.reject(req, Errno.ESHUTDOWN, 'server is shutting down');
    let length = req.length;
    let contextIds = [...this.session.metaContexts.keys()];
    if (req.type === Command.BLOCK_STATUS && (req.flags & CommandFlag.PAYLOAD_LEN) !== 0 && payload) {
      // Extended BLOCK_STATUS payload: the effect length and the contexts wanted.
      try {
        const p = decodeBlockStatusPayload(payload.bytes);
        length = p.effectLength;
        const unknown = p.contextIds.find((id) => !this.session.metaContexts.has(id));
        if (unknown !== undefined) return this.reject(req, Errno.EINVAL, `meta context ${unknown} was not selected`);
        if (p.contextIds.length > 0) contextIds = p.contextIds;
      } catch (e) {
        return this.reject(req, Errno.EINVAL, (e as Error).message);
      }
    }
    const rejection = validateRequest(req, length, this.session, oversized === true);
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
    this.budget.start(p.cost);
    return p;
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

  private reject(req: Request, errno: number, message: string): undefined {
    this.logger.debug(`${this.peer}: ${commandName(req.type)} rejected: ${message}`);
    this.out.send({ kind: 'error', cookie: req.cookie, offset: req.offset, type: req.type, errno, message });
    return undefined;
  }

  /** Hands the payload to the device; the lease ends once the device is done with it. */
  private write(p: Pending, payload: ViewLease): void {
    const dev = this.session.device;
    let r: MaybePromise<void>;
    try {
      r = dev.writeAt!(payload.bytes, p.offset, (p.flags & CommandFlag.FUA) !== 0 && dev.fua ? this.fuaOpts : this.opts);
    } catch (e) {
      payload.release();
      this.fail(p, e);
      return;
    }
    if (!isPromise(r)) {
      payload.release();
      this.afterWrite(p);
      return;
    }
    r.then(
      () => {
        payload.release();
        this.afterWrite(p);
      },
      (e: unknown) => {
        payload.release();
        this.fail(p, e);
      },
    );
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
        } else
          this.step(
            p,
            writeZeroes(p.offset, p.length, (zeroes, at) => dev.writeAt!(zeroes, at, this.opts)),
            this.afterWrite,
          );
        return;
      case Command.CACHE:
        this.step(p, dev.cache ? dev.cache(p.offset, p.length, this.opts) : readAndDrop(dev, p.offset, p.length, this.opts), this.ok);
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
    throw new Error(`internal: ${commandName(p.type)} passed validation`);
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
    const lease = this.out.readLease(p.length);
    let r: MaybePromise<void>;
    try {
      r = dev.readAt(lease.data, p.offset, this.opts);
    } catch (e) {
      lease.release();
      throw e;
    }
    if (!isPromise(r)) this.answer(p, { kind: 'data', cookie: p.cookie, offset: p.wireOffset, lease });
    else {
      r.then(
        () => this.answer(p, { kind: 'data', cookie: p.cookie, offset: p.wireOffset, lease }),
        (e: unknown) => {
          lease.release();
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
          const lease = this.out.readLease(run.length);
          segments.push({ offset: run.offset, lease });
          await this.session.device.readAt(lease.data, run.offset, this.opts);
        }
      }
    } catch (e) {
      releaseSegments(segments);
      this.fail(p, e);
      return;
    }
    // Sent together only once every read succeeded, so an error never follows data.
    this.answer(p, { kind: 'segments', cookie: p.cookie, offset: p.wireOffset, segments });
  }

  private readonly afterWrite = (p: Pending): void => {
    const dev = this.session.device;
    if ((p.flags & CommandFlag.FUA) !== 0 && !dev.fua && dev.sync) this.step(p, dev.sync(this.opts), this.ok);
    else this.ok(p);
  };

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

  /** Sends `reply` for `p` (or ESHUTDOWN when shutting down: `unused` ends a loan the reply carries). */
  private answer(p: Pending, reply: Reply, unused?: () => void): void {
    if (this.shuttingDown) {
      unused?.();
      if (reply.kind === 'data') reply.lease.release();
      else if (reply.kind === 'segments') releaseSegments(reply.segments);
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
      this.logger.debug(`${this.peer}: ${commandName(p.type)} at ${p.offset}+${p.length} failed: ${message}`);
    }
    this.out.send({ kind: 'error', cookie: p.cookie, offset: p.wireOffset, type: p.type, errno, message });
    this.settle(p);
  }

  private settle(p: Pending): void {
    this.budget.finish(p.cost);
  }
}

function releaseSegments(segments: ReadSegment[]): void {
  for (const s of segments) if ('lease' in s) s.lease.release();
}
