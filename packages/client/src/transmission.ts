// The transmission phase as glue: one transport, the frame reader, and the engines
// (the request table: cookies, settle once, aborts; the reply assembler: every rule
// of the spec; the request writer: staging, batching, backpressure). One state union
// with its transition table says where the connection is. Connection (the public
// API: checks, splitting) sits on top.
import type { Duplex } from 'node:stream';
import { NodeTransport } from '@nbd/node';
import {
  abortError,
  Command,
  CommandFlag,
  Errno,
  NbdClosedError,
  NbdErrnoError,
  type NbdError,
  NbdStateError,
  NbdUnsupportedError,
  ProtocolError,
  raceSignal,
  type ServerFrame,
  type Transport,
} from '@nbd/protocol';
import { COMMANDS, type CommandArgs, type CommandKind, type CommandResult, type Delivery, type LentBytes } from './commands.js';
import type { FrameReader } from './frame-reader.js';
import { assembleChunk, assembleSimple, type ReplyOutcome, simpleReplyPayload } from './reply-assembler.js';
import { abandonReply, assembledBytes, type ReadReply, type ReplyRules, takeSingle, type ViewHolder } from './reply-state.js';
import { type PendingRequest, RequestTable } from './request-table.js';
import { RequestWriter } from './request-writer.js';

/**
 * Where a connection is: `transmitting`; `draining` (disconnect() called or the server
 * said ESHUTDOWN: no new requests, in-flight ones finish); `closing` (DISC sent);
 * `closed`; `failed` (`error` says why); `detached` (the socket was handed over).
 */
export type ConnectionState = 'transmitting' | 'draining' | 'closing' | 'closed' | 'failed' | 'detached';

const TRANSITIONS: Record<ConnectionState, readonly ConnectionState[]> = {
  transmitting: ['draining', 'failed', 'detached'],
  draining: ['closing', 'closed', 'failed'],
  closing: ['closed'],
  closed: [],
  failed: [],
  detached: [],
};

/** READ answers below this size are copied out of the read arena rather than returned as views. */
const SMALL_READ = 64 * 1024;
/** After DISC, how long the server has to close before we do. */
const CLOSE_WAIT = 2000;

/** One connection in the transmission phase: the glue between its transport, reader and engines. */
export class Transmission {
  private stateNow: ConnectionState = 'transmitting';
  private failure: NbdError | undefined;
  /** Why new requests are refused (draining or later). */
  private refusal: NbdError | undefined;
  private readonly table = new RequestTable();
  private readonly writer: RequestWriter;
  private readonly views: ViewHolder;
  private readonly delivery: Delivery = { keep: (st) => this.keep(st), lend: (st) => this.lend(st) };
  private readonly closed = Promise.withResolvers<void>();

  constructor(
    private readonly transport: Transport,
    private readonly reader: FrameReader,
    private readonly rules: ReplyRules,
    maxPayload: number,
  ) {
    const arenas = reader.arenas;
    this.views = { hold: (v) => arenas.hold(v), release: (v) => arenas.release(v) };
    this.writer = new RequestWriter(transport, rules.extended, () => this.table.size);
    this.table.onAbandon = (p) => {
      abandonReply(p.reply, this.views); // an aborted request never touches its buffer again
      if (p.payload !== undefined) this.writer.unshare(p.payload);
    };
    const decoder = reader.decoder;
    decoder.maxChunk = Math.max(decoder.maxChunk, maxPayload + 64);
    decoder.readLength = (cookie) => {
      const p = this.table.get(Number(cookie));
      return p === undefined ? undefined : simpleReplyPayload(this.rules, p.reply);
    };
    reader.startTransmission(rules.extended);
    reader.onEnd = (err) => this.ended(err);
    transport.onClose = (err) => {
      this.ended(err);
      this.closed.resolve();
    };
    if (transport.closed) this.closed.resolve();
    reader.consume(this.onFrame); // frames that came with the end of the handshake first
  }

  get state(): ConnectionState {
    return this.stateNow;
  }

  /** How replies are read: 'direct' (the fast path) or 'copy' (TLS, any other stream). */
  get readMode(): 'direct' | 'copy' {
    return this.reader.readMode;
  }

  get error(): NbdError | undefined {
    return this.failure;
  }

  get inFlight(): number {
    return this.table.size;
  }

  /**
   * Sends one request of `kind` (see COMMANDS); resolves with its result once the reply is
   * done. Refused (nothing sent) once draining, or if `signal` aborted.
   */
  submit<K extends CommandKind>(
    kind: K,
    flags: number,
    offset: number,
    length: number,
    args: CommandArgs<K>,
    signal: AbortSignal | undefined,
  ): Promise<CommandResult<K>> {
    const spec = COMMANDS[kind];
    if (this.refusal !== undefined) return Promise.reject(this.refusal);
    if (signal?.aborted) return Promise.reject(abortError(signal, spec.what));
    const reply = spec.reply(offset, length, flags, args);
    const payload = spec.payload(args);
    const { promise, resolve, reject } = Promise.withResolvers<CommandResult<K>>();
    const complete = () => resolve(spec.result(reply, this.delivery));
    const cookie = this.table.add(reply, complete, reject, signal, spec.what, payload);
    let wireLength = length;
    if (this.rules.extended && payload !== undefined) {
      flags |= CommandFlag.PAYLOAD_LEN; // mandatory on WRITE (whose length is its payload's); the BLOCK_STATUS payload form
      wireLength = payload.length;
    }
    this.writer.send({ flags, type: reply.command, cookie, offset, length: wireLength }, payload);
    return promise;
  }

  /** See Connection.disconnect. */
  async disconnect(signal: AbortSignal | undefined): Promise<void> {
    if (this.stateNow === 'detached') throw new NbdStateError('disconnect(): the connection was detached');
    if (this.stateNow === 'transmitting') this.drain(new NbdClosedError('the connection is closing (disconnect() was called)'));
    if (this.stateNow === 'draining') {
      try {
        await raceSignal(this.table.whenIdle(), signal, 'disconnect');
      } catch (e) {
        if (this.stateNow === 'draining')
          this.hardClose(new NbdClosedError('disconnect() was aborted: the connection was closed at once', { cause: e }));
        throw e;
      }
      this.sendDiscWhenIdle();
    }
    const timer = setTimeout(() => this.transport.destroy(), CLOSE_WAIT);
    timer.unref?.();
    await this.closed.promise;
    clearTimeout(timer);
  }

  /** See Connection.detach. */
  detach(): Duplex {
    if (this.stateNow !== 'transmitting') throw this.failure ?? new NbdStateError(`detach(): the connection is ${this.stateNow}`);
    if (this.table.size > 0 || this.reader.decoder.buffered > 0 || !this.writer.empty) {
      throw new NbdStateError('detach(): requests are still in flight or bytes are buffered');
    }
    const t = this.transport;
    if (!(t instanceof NodeTransport)) throw new NbdUnsupportedError('detach(): only a Node socket can be handed over');
    let socket: Duplex;
    try {
      socket = t.detach();
    } catch (e) {
      // Still ours. A socket reading into our arenas never stopped (the failing pause was the
      // handle's readStop); one that copies 'data' was paused and must go on.
      if (t.mode !== 'direct') t.resume();
      throw new NbdUnsupportedError(`detach(): the socket cannot stop reading, so it cannot be handed over: ${(e as Error).message}`, {
        cause: e,
      });
    }
    this.to('detached');
    this.refusal = new NbdStateError('the connection was detached (its socket was handed over)');
    this.reader.stop();
    this.writer.clear();
    t.onClose = undefined;
    return socket;
  }

  // ------------------------------------------------------------ replies

  private readonly onFrame = (f: ServerFrame): boolean => {
    if (f.kind === 'simple-reply') {
      const p = this.pendingFor(f.cookie);
      this.settle(p, assembleSimple(this.rules, p.reply, f.error, f.data, this.views));
    } else if (f.kind === 'chunk') {
      const p = this.pendingFor(f.header.cookie);
      const out = assembleChunk(this.rules, p.reply, f.header, f.payload, this.views);
      if (out !== undefined) this.settle(p, out);
    } else throw new ProtocolError(`unexpected ${f.kind} during transmission`);
    return true;
  };

  private pendingFor(cookie: bigint): PendingRequest {
    const p = this.table.get(Number(cookie));
    if (p === undefined)
      throw new ProtocolError(`reply for unknown cookie ${cookie} (the spec: a reply's cookie MUST match a request in flight)`);
    return p;
  }

  /** A reply is complete: its caller gets the outcome (unless it gave up), and the connection moves on. */
  private settle(p: PendingRequest, out: ReplyOutcome): void {
    if (!this.table.finish(p)) abandonReply(p.reply, this.views);
    else if (!out.ok) p.reject(out.error);
    else {
      try {
        p.complete();
      } catch (e) {
        p.reject(e); // an internal fault fails this request, not the stream
      }
    }
    if (!out.ok && out.error.errno === Errno.ESHUTDOWN && this.stateNow === 'transmitting') {
      // The server is going away: the spec asks for a soft disconnect once nothing is in flight.
      this.drain(new NbdErrnoError(Errno.ESHUTDOWN, 'the server is shutting down; no new requests'));
    }
    this.writer.replied();
    this.sendDiscWhenIdle();
  }

  /** A READ's bytes for its caller to keep: a large view stays in its arena, a small one is copied out. */
  private keep(st: ReadReply): Uint8Array {
    const held = takeSingle(st);
    if (held === undefined) return assembledBytes(st);
    let out = held;
    if (held.length >= SMALL_READ) this.reader.arenas.keep(held);
    // A small answer kept for long must not pin a whole arena. A copy, and not `slice()`:
    // arenas are Buffers, whose slice() is a view.
    else out = new Uint8Array(held);
    this.views.release(held);
    return out;
  }

  /** A READ's bytes lent until released (or, when its reply was assembled from several chunks, its own buffer). */
  private lend(st: ReadReply): LentBytes {
    const held = takeSingle(st);
    return held === undefined ? notLent(assembledBytes(st)) : new Lent(held, this.views);
  }

  // ------------------------------------------------------------ state

  private to(next: ConnectionState): void {
    if (!TRANSITIONS[this.stateNow].includes(next)) throw new Error(`internal: connection state ${this.stateNow} → ${next}`);
    this.stateNow = next;
  }

  /** No new requests from now on; the ones in flight finish, then DISC goes. */
  private drain(refusal: NbdError): void {
    this.to('draining');
    this.refusal = refusal;
    this.sendDiscWhenIdle();
  }

  private sendDiscWhenIdle(): void {
    if (this.stateNow !== 'draining' || this.table.size > 0) return;
    this.to('closing');
    this.writer.send({ flags: 0, type: Command.DISC, cookie: 0, offset: 0, length: 0 });
    this.writer.endAfterFlush();
  }

  /** The transport ended or broke, or the reader found a malformed frame. */
  private ended(err: Error | undefined): void {
    const s = this.stateNow;
    if (s === 'closing') {
      this.closedNow(new NbdClosedError('the connection is closed'));
      this.reader.stop();
    } else if (s === 'transmitting' || s === 'draining') {
      this.fail(err instanceof ProtocolError ? err : new NbdClosedError('the server closed the connection', { cause: err }));
    }
  }

  private closedNow(error: NbdError): void {
    this.to('closed');
    this.failure = error;
    this.refusal = error;
  }

  /** Closes at once (an aborted disconnect): every request still waiting rejects with `error`. */
  private hardClose(error: NbdError): void {
    this.closedNow(error);
    this.teardown(error);
  }

  private fail(error: NbdError): void {
    this.to('failed');
    this.failure = error;
    this.refusal = error;
    this.teardown(error);
  }

  private teardown(error: NbdError): void {
    this.writer.clear();
    for (const p of this.table.failAll(error)) abandonReply(p.reply, this.views);
    this.reader.stop();
    this.transport.destroy();
  }
}

/** A view lent from a read arena; `release()` gives it back once, also when destructured (`const { data, release } = …`). */
class Lent implements LentBytes {
  constructor(
    readonly data: Uint8Array,
    private holder: ViewHolder | undefined,
  ) {}

  readonly release = (): void => {
    const h = this.holder;
    this.holder = undefined;
    h?.release(this.data);
  };

  [Symbol.dispose](): void {
    this.release();
  }
}

/** Bytes that need no giving back, as LentBytes. */
export function notLent(data: Uint8Array): LentBytes {
  return new Lent(data, undefined);
}
