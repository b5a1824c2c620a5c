// The one writer of a connection's requests. Headers are written one after another
// into a staging buffer and every request issued in one event-loop turn leaves in
// one write at setImmediate (a run of headers is one chunk; a WRITE's payload is
// passed along, not copied). With many requests on the wire, a lone new one waits
// for a few more (fewer wake-ups of the server). Beyond HIGH_WATER bytes queued in
// the transport, requests wait for its drain.
import { Size, type Transport, writeRequest } from '@nbd/protocol';

/** Bytes queued in the transport beyond which new requests wait for 'drain'. */
export const HIGH_WATER = 4 * 1024 * 1024;
/** Requests already on the wire from which new ones are held back until BATCH of them are queued. */
const DEEP = 8;
const BATCH = 4;
/** Bytes of request headers staged per buffer before a new one is taken. */
const STAGE = 16 * 1024;

/** A request header's fields (numbers: the writer makes them wire integers). */
export interface RequestHeader {
  flags: number;
  type: number;
  cookie: number;
  offset: number;
  /** The header's length field: the effect length, or the payload's with PAYLOAD_LEN. */
  length: number;
}

/** Stages, batches and writes one connection's requests. */
export class RequestWriter {
  /** Request headers are written here one after another; a run of them leaves as one chunk. */
  private stage: Buffer = Buffer.allocUnsafe(STAGE);
  private stagePos = 0;
  /** Start of the header run not yet in `out`, or -1. */
  private runStart = -1;
  /** Chunks for the next write, in order: header runs and payloads (not copied). */
  private out: Uint8Array[] = [];
  /** Requests in `out` and the run, not yet handed to the transport. */
  private staged = 0;
  private flushQueued = false;
  /** End the transport after the next flush (DISC is in it). */
  private endAfter = false;
  private cleared = false;

  constructor(
    private readonly transport: Transport,
    private readonly extended: boolean,
    /** Requests sent and not answered yet (the request table's size). */
    private readonly inFlight: () => number,
  ) {
    transport.onDrain = () => {
      if (this.out.length > 0 || this.runStart >= 0 || this.endAfter) this.flush();
    };
  }

  /** Nothing staged: every request so far is in the transport's hands. */
  get empty(): boolean {
    return this.out.length === 0 && this.runStart < 0;
  }

  /** Queues a request; it leaves with everything else queued in this event-loop turn. */
  send(h: RequestHeader, payload?: Uint8Array): void {
    if (this.cleared) return;
    const size = this.extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
    if (this.stagePos + size > this.stage.length) {
      this.closeRun();
      this.stage = Buffer.allocUnsafe(STAGE); // the old one may still be queued in the transport: never rewritten
      this.stagePos = 0;
    }
    const req = { flags: h.flags, type: h.type, cookie: BigInt(h.cookie), offset: BigInt(h.offset), length: BigInt(h.length) };
    writeRequest(this.stage, this.stagePos, req, this.extended);
    if (this.runStart < 0) this.runStart = this.stagePos;
    this.stagePos += size;
    if (payload !== undefined && payload.length > 0) {
      this.closeRun();
      this.out.push(payload);
    }
    this.staged++;
    this.schedule();
  }

  /** The transport ends once what is queued (DISC last) is written. */
  endAfterFlush(): void {
    this.endAfter = true;
    this.schedule();
  }

  /**
   * `payload` was aborted by its caller, who may reuse it at once: if it is still
   * staged here, a copy goes instead (the header that claims it is staged too).
   */
  unshare(payload: Uint8Array): void {
    const i = this.out.indexOf(payload);
    if (i >= 0) this.out[i] = new Uint8Array(payload); // a copy: a Buffer's slice() would be a view
  }

  /** A reply arrived: requests held back for batching may go now. */
  replied(): void {
    if (this.staged > 0 && !this.holding()) this.schedule();
  }

  /** The connection failed: nothing more is written. */
  clear(): void {
    this.cleared = true;
    this.out = [];
    this.runStart = -1;
    this.staged = 0;
    this.endAfter = false;
    this.transport.onDrain = undefined;
  }

  private schedule(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(this.flush);
  }

  /**
   * While the pipe is well filled, a lone request waits for a few more (or for the pipe to
   * run lower): every write wakes a server thread, so fewer, fuller writes cost both sides less.
   */
  private holding(): boolean {
    return !this.endAfter && this.staged < BATCH && this.inFlight() - this.staged >= DEEP;
  }

  private closeRun(): void {
    if (this.runStart < 0) return;
    this.out.push(this.stage.subarray(this.runStart, this.stagePos));
    this.runStart = -1;
  }

  private readonly flush = (): void => {
    this.flushQueued = false;
    if (this.cleared || this.transport.closed) return;
    // Beyond HIGH_WATER queued in the transport, requests wait in `out` for the drain that is due.
    if ((this.transport.writableLength > HIGH_WATER && this.transport.needsDrain) || this.holding()) return;
    this.staged = 0;
    this.closeRun();
    const out = this.out;
    if (out.length === 1) this.transport.write(out[0]!);
    else if (out.length > 1) {
      this.transport.cork();
      for (const c of out) this.transport.write(c);
      this.transport.uncork();
    }
    this.out = [];
    if (this.endAfter) {
      this.endAfter = false;
      this.transport.end();
    }
  };
}
