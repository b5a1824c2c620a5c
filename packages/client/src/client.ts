// The negotiating phase as glue: a transport, a frame reader, and the option engine.
// Each public call runs option steps one at a time (the engine decides which), under
// the caller's signal and the handshake limit. Once go() returns a Connection this
// Client is done (libnbd's permitted states).

import { type ClientTlsOptions, clientTls, NodeTransport, type TlsIdentity } from '@nbd/node';
import {
  NbdAbortError,
  NbdClosedError,
  type NbdError,
  NbdOptionError,
  NbdStateError,
  NbdTimeoutError,
  NbdUnsupportedError,
  Option,
  OptionReply,
  ProtocolError,
  type ServerFrame,
  type Transport,
  tieToSignal,
} from '@nbd/protocol';
import { type ConnectOptions, type GoOptions, handshakeLimit, optionReplyLimits } from './client-options.js';
import { Connection } from './connection.js';
import type { Signal } from './export-handle.js';
import { type ExportInfo, makeExportInfo } from './export-info.js';
import { FrameReader } from './frame-reader.js';
import {
  type ExportListing,
  type HandshakeStyle,
  OptionEngine,
  type OptionReplyLimits,
  type StepCall,
  type StepKind,
  type StepOutcome,
  type StepResult,
} from './option-engine.js';
import { beforeListMetaContext, goSteps, selectedContexts } from './option-plans.js';
import { type ConnectTarget, type Opened, openTransport } from './target.js';

/**
 * Where a Client is: `connecting` (transport and greeting), `negotiating` (ready for an
 * option), `busy` (one option sequence under way), `done` (go() returned a Connection),
 * `closed` (aborted, failed, or refused).
 */
export type ClientState = 'connecting' | 'negotiating' | 'busy' | 'done' | 'closed';

const TRANSITIONS: Record<ClientState, readonly ClientState[]> = {
  connecting: ['negotiating', 'closed'],
  negotiating: ['busy', 'closed'],
  busy: ['negotiating', 'done', 'closed'],
  done: [],
  closed: [],
};

/** One call's limits: the caller's signal, and the handshake limit as a signal of its own. */
interface Call {
  what: string;
  user: AbortSignal | undefined;
  limit: number;
  /** Aborts when either does. */
  signal: AbortSignal | undefined;
}

/**
 * The negotiating phase: `Client.connect()`, then `list()`, `info()`, `listMetaContexts()`
 * as often as needed, one at a time, and `go()` for a Connection (the Client is done
 * then) or `abort()`.
 */
export class Client {
  private stateNow: ClientState = 'connecting';
  private closeReason: unknown;
  private readonly engine: OptionEngine;
  private reader: FrameReader;
  private tlsIdentity: TlsIdentity | undefined;
  /** Rejects the step waiting for frames when the stream ends under it. */
  private interrupt: ((error: NbdError) => void) | undefined;
  private streamEnd: NbdError | undefined;

  private constructor(
    private transport: Transport,
    /** The export named in the URI, used when `go()`/`info()` get no name. */
    readonly defaultExport: string,
    private readonly limit: number,
    replyLimits: OptionReplyLimits,
  ) {
    this.engine = new OptionEngine(replyLimits);
    this.reader = this.readerOf(transport);
  }

  private readerOf(transport: Transport): FrameReader {
    const reader = new FrameReader(transport);
    reader.onEnd = (err) => {
      // A broken stream is hung up at once (even between calls, when no call would close it).
      if (err instanceof ProtocolError) transport.destroy();
      this.streamEnd =
        err instanceof ProtocolError ? err : new NbdClosedError('the server closed the connection during the handshake', { cause: err });
      this.interrupt?.(this.streamEnd);
    };
    return reader;
  }

  /**
   * Connects and reads the greeting. `target`: an NBD URI (string or URL), `{ path }`,
   * `{ host, port }`, a connected Duplex or a Transport. `signal` aborts connecting (the
   * socket is closed; NbdAbortError).
   */
  static async connect(target: ConnectTarget, opts: ConnectOptions = {}): Promise<Client> {
    const call = callOf('connect', opts.signal, handshakeLimit(opts.handshakeTimeout));
    const replyLimits = optionReplyLimits(opts);
    if (call.user?.aborted) throw interpret(undefined, call);
    let opened: Opened;
    try {
      opened = await openTransport(target, call.signal);
    } catch (e) {
      throw interpret(e, call);
    }
    if (opened.transport.closed) throw new NbdClosedError('connect: the stream given is closed already');
    const client = new Client(opened.transport, opened.exportName, call.limit, replyLimits);
    try {
      const clientFlags = await client.awaitStep(call, (f) => client.engine.greet(f));
      if (clientFlags !== undefined) client.transport.write(clientFlags);
      const tls = opened.tls || opts.tls ? { mode: 'require' as const, ...opened.tls, ...opts.tls } : undefined;
      if (tls !== undefined && tls.mode !== 'off') await client.startTls(tls, opened.host, call);
      client.to('negotiating');
      return client;
    } catch (e) {
      const err = interpret(e, call);
      client.close(err);
      throw err;
    }
  }

  /** Who the server is over TLS (protocol, cipher, PSK user), or undefined when the session is plaintext. */
  get tls(): TlsIdentity | undefined {
    return this.tlsIdentity;
  }

  /** Milliseconds the server has for each handshake step (the `handshakeTimeout` option; 0: no limit). */
  get handshakeTimeout(): number {
    return this.limit;
  }

  /** Where the client is (see ClientState). */
  get state(): ClientState {
    return this.stateNow;
  }

  /** How the server greeted us. */
  get style(): HandshakeStyle {
    return this.engine.state.style!;
  }

  /**
   * Structured replies are negotiated so far (listMetaContexts() and go() ask for them
   * first; nbdinfo's `structured` says this). False before they were asked for.
   */
  get structuredReplies(): boolean {
    return this.engine.state.structured;
  }

  /** Handshake flags the server sent (`HandshakeFlag`); 0 for oldstyle. */
  get handshakeFlags(): number {
    return this.engine.state.handshakeFlags;
  }

  /** Exports the server lists (NBD_OPT_LIST). */
  async list(opts: Signal = {}): Promise<ExportListing[]> {
    return this.run('list', opts.signal, (call) => this.exchange({ kind: 'list', args: undefined }, call));
  }

  /** Size, flags, block sizes and description of an export (NBD_OPT_INFO); the client stays negotiating. */
  async info(name: string = this.defaultExport, opts: Signal = {}): Promise<ExportInfo> {
    return this.run('info', opts.signal, async (call) => {
      const n = this.engine.state;
      if (n.style !== 'oldstyle') return this.exchange({ kind: 'info', args: { name } }, call);
      if (name !== '') throw new NbdUnsupportedError('an oldstyle server has no export names');
      return makeExportInfo('', n.oldstyle!.size, n.oldstyle!.flags);
    });
  }

  /** Metadata contexts matching `queries` (all, when empty) on `name` (NBD_OPT_LIST_META_CONTEXT). */
  async listMetaContexts(name: string = this.defaultExport, queries: string[] = [], opts: Signal = {}): Promise<string[]> {
    return this.run('listMetaContexts', opts.signal, async (call) => {
      for (const step of beforeListMetaContext(this.engine.state)) await this.exchange(step, call);
      return this.exchange({ kind: 'list-meta-context', args: { name, queries } }, call);
    });
  }

  /**
   * Selects the export and enters the transmission phase: this Client is done afterwards.
   * An aborted or timed-out go() closes the client (the server's answer may still come).
   */
  async go(name: string = this.defaultExport, opts: GoOptions = {}): Promise<Connection> {
    const want = {
      name,
      structured: opts.structuredReplies ?? true,
      extended: opts.extendedHeaders ?? false,
      metaContexts: opts.metaContexts ?? [],
    };
    return this.run('go', opts.signal, async (call) => {
      for (const step of goSteps(this.engine.state, want)) {
        try {
          await this.exchange(step, call);
        } catch (e) {
          // EXPORT_NAME has no error reply: a server refusing the export just closes.
          if (step.kind !== 'export-name' || !(e instanceof NbdClosedError)) throw e;
          throw new NbdOptionError(
            Option.EXPORT_NAME,
            OptionReply.ERR_UNKNOWN,
            `the server closed the connection: it refuses the export "${name}"`,
            { cause: e },
          );
        }
      }
      const n = this.engine.state;
      this.to('done');
      this.reader.onEnd = undefined; // the Connection's from now on
      const negotiated = {
        structured: n.structured,
        extended: n.extended,
        metaContexts: selectedContexts(n, name, want.metaContexts),
        strict: opts.strict ?? true,
        tls: this.tlsIdentity,
      };
      return new Connection(this.transport, this.reader, n.export!, negotiated);
    });
  }

  /** Ends the negotiation politely (NBD_OPT_ABORT, waiting up to a second for its ACK) and closes. */
  async abort(opts: Signal = {}): Promise<void> {
    if (this.stateNow === 'done' || this.stateNow === 'closed') return;
    if (this.stateNow === 'busy') throw new NbdStateError('abort() while another option is in progress');
    if (this.engine.state.style === 'fixed-newstyle' && this.streamEnd === undefined) {
      this.to('busy');
      const call = callOf('abort', opts.signal, 1000);
      await this.exchange({ kind: 'abort', args: undefined }, call).catch(() => undefined); // the server may just close
    }
    this.close(new NbdClosedError('the client was closed (abort())'));
  }

  /** `await using client = await Client.connect(...)`: aborts the negotiation unless go() took over. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.stateNow === 'busy') this.close(new NbdClosedError('the client was disposed during an option'));
    else await this.abort();
  }

  // ------------------------------------------------------------- internals

  /**
   * STARTTLS as the first option, then the TLS handshake on the same socket. With
   * mode 'require' any refusal fails the connection (a downgrade attempt looks exactly
   * like a server without TLS); with 'allow' plaintext goes on.
   */
  private async startTls(tls: ClientTlsOptions, host: string | undefined, call: Call): Promise<void> {
    const require = tls.mode !== 'allow';
    if (this.engine.state.style !== 'fixed-newstyle') {
      if (require)
        throw new NbdUnsupportedError(`TLS is required, but the server is ${this.engine.state.style} (STARTTLS needs fixed newstyle)`);
      return;
    }
    try {
      await this.exchange({ kind: 'starttls', args: undefined }, call);
    } catch (e) {
      if (!(e instanceof NbdOptionError)) throw e;
      if (require)
        throw new NbdUnsupportedError(
          `TLS is required, but the server answered STARTTLS with ${e.replyName}${e.serverMessage ? `: ${e.serverMessage}` : ''}`,
          { cause: e },
        );
      return;
    }
    const plain = this.transport;
    if (!(plain instanceof NodeTransport)) throw new NbdUnsupportedError('STARTTLS needs a Node socket under the connection');
    // Anything the server sent after its ACK and before TLS is dropped with the old reader.
    this.reader.stop();
    const { transport, identity } = await plain.startTls((raw) => clientTls(raw, tls, host, call.limit > 0 ? call.limit : 60_000));
    this.transport = transport;
    this.reader = this.readerOf(transport);
    this.reader.decoder.startOptions();
    this.tlsIdentity = identity;
  }

  private to(next: ClientState): void {
    if (!TRANSITIONS[this.stateNow].includes(next)) throw new Error(`internal: client state ${this.stateNow} → ${next}`);
    this.stateNow = next;
  }

  private close(reason: unknown): void {
    if (this.stateNow === 'closed' || this.stateNow === 'done') return;
    if (this.engine.state.phase === 'closed' && this.streamEnd === undefined && !this.transport.closed) {
      this.transport.write(this.engine.softDisconnect()); // ERR_SHUTDOWN: the spec asks for NBD_OPT_ABORT
      this.transport.end();
    } else this.transport.destroy();
    this.to('closed');
    this.closeReason = reason;
    this.reader.stop();
  }

  private check(what: string): void {
    const s = this.stateNow;
    if (s === 'done') throw new NbdStateError(`${what}(): the handshake is over (go() already returned a Connection)`);
    if (s === 'closed')
      throw new NbdStateError(`${what}(): this client is closed: ${(this.closeReason as Error | undefined)?.message}`, {
        cause: this.closeReason,
      });
    if (s === 'busy') throw new NbdStateError(`${what}(): another option is in progress; options go one at a time`);
  }

  /**
   * Runs one call's option steps. A refusal, or the caller's own mistake, leaves the
   * client negotiating; a broken stream, an abort or a timeout closes it.
   */
  private async run<T>(what: string, signal: AbortSignal | undefined, body: (call: Call) => Promise<T>): Promise<T> {
    this.check(what);
    const call = callOf(what, signal, this.limit);
    if (call.user?.aborted) throw interpret(undefined, call); // nothing sent: still negotiating
    this.to('busy');
    try {
      const out = await body(call);
      if (this.stateNow === 'busy') this.to('negotiating');
      return out;
    } catch (e) {
      const err = interpret(e, call);
      if (this.stateNow === 'busy') {
        const usable = this.streamEnd === undefined && this.engine.state.phase === 'options' && !this.engine.busy;
        if (usable && (err instanceof NbdOptionError || err instanceof NbdStateError || err instanceof NbdUnsupportedError))
          this.to('negotiating');
        else this.close(err);
      }
      throw err;
    }
  }

  /** Sends one option step and resolves with its result. */
  private exchange<K extends StepKind>(step: StepCall<K>, call: Call): Promise<StepResult<K>> {
    if (this.streamEnd !== undefined) return Promise.reject(this.streamEnd);
    const { bytes, expect, feed } = this.engine.start(step);
    if (expect === 'export-name-reply') this.reader.decoder.expectExportNameReply(this.engine.state.noZeroes);
    this.transport.write(bytes);
    return this.awaitStep(call, feed);
  }

  /** Gives frames to `feed` until the step in progress (or the greeting) is over. */
  private awaitStep<T>(call: Call, feed: (f: ServerFrame) => StepOutcome<T>): Promise<T> {
    if (this.streamEnd !== undefined) return Promise.reject(this.streamEnd);
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    let untie = noop;
    const settle = (fn: () => void) => {
      untie();
      this.interrupt = undefined;
      this.reader.consume(undefined);
      fn();
    };
    this.interrupt = (err) => settle(() => reject(err));
    untie = tieToSignal(call.signal, () => settle(() => reject(interpret(undefined, call))));
    this.reader.consume((f) => {
      try {
        const out = feed(f);
        if (!out.done) return true;
        settle(() => resolve(out.value));
      } catch (e) {
        settle(() => reject(e));
      }
      return false;
    });
    return promise;
  }
}

function callOf(what: string, user: AbortSignal | undefined, limit: number): Call {
  const timer = limit > 0 ? AbortSignal.timeout(limit) : undefined;
  const signal = user && timer ? AbortSignal.any([user, timer]) : (user ?? timer);
  return { what, user, limit, signal };
}

/**
 * The error a call rejects with: the caller's abort (NbdAbortError, `cause` its reason),
 * the handshake limit (NbdTimeoutError), or what went wrong (kept as it is).
 */
function interpret(e: unknown, call: Call): unknown {
  if (call.user?.aborted)
    return e instanceof NbdAbortError && e.cause === call.user.reason
      ? e
      : new NbdAbortError(`${call.what} was aborted`, { cause: call.user.reason });
  if (call.signal?.aborted)
    return new NbdTimeoutError(`${call.what}: no answer from the server within ${call.limit} ms (handshakeTimeout)`, { cause: e });
  return e;
}

function noop(): void {}
