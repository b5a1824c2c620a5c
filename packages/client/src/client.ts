// The negotiating phase: greeting, options (LIST, INFO, LIST/SET_META_CONTEXT,
// STRUCTURED_REPLY, EXTENDED_HEADERS, GO or EXPORT_NAME), then hand-over to a
// Connection. Once `go()` succeeds this Client is finished (libnbd's states).
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  ClientFlag,
  HandshakeFlag,
  Info,
  NbdOptionError,
  Option,
  OptionReply,
  ProtocolError,
  decodeOptionReply,
  encodeClientFlags,
  encodeOptionRequest,
  nameOf,
  parseNbdUri,
  type OptionReplyMessage,
  type OptionRequest,
} from '@nbd/protocol';
import { Connection } from './connection.js';
import { type BlockSizes, type ExportInfo, makeExportInfo, validBlockSizes } from './export-info.js';
import { Intake } from './intake.js';
import { Wire } from './wire.js';

export type HandshakeStyle = 'oldstyle' | 'newstyle' | 'fixed-newstyle';

export interface ConnectOptions {
  signal?: AbortSignal;
  /** Milliseconds allowed for connecting and reading the greeting. */
  timeout?: number;
}

export interface GoOptions {
  /** Negotiate structured replies (default true). Off for the Linux kernel, which speaks simple replies only. */
  structuredReplies?: boolean;
  /** Negotiate extended headers (default false; opt-in, no Debian peer speaks them yet). */
  extendedHeaders?: boolean;
  /** Metadata contexts to select for BLOCK_STATUS, e.g. ["base:allocation"]. */
  metaContexts?: string[];
  signal?: AbortSignal;
}

/** Misuse of a Client or Connection in a state where the call is not permitted. */
export class NbdStateError extends Error {
  override readonly name = 'NbdStateError';
}

/** A feature the server (or its handshake style) does not offer. */
export class NbdUnsupportedError extends Error {
  override readonly name = 'NbdUnsupportedError';
}

type State = 'negotiating' | 'busy' | 'done' | 'dead';

/**
 * The write buffer of sockets we open: as large as the queue a Connection allows itself, so
 * write() keeps returning true (no 'drain' round per batch) until that much is waiting.
 */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;
// net.connect passes its options on to stream.Duplex; @types/node's NetConnectOpts omits this one.
const duplexOpts: object = { writableHighWaterMark: WRITE_HIGH_WATER };

/** Opens the transport for `target` (an NBD URI or a connected Duplex). */
async function openTransport(target: string | Duplex, signal: AbortSignal | undefined): Promise<{ socket: Duplex; intake: Intake; exportName?: string }> {
  const intake = new Intake();
  if (typeof target !== 'string') {
    intake.listen(target);
    return { socket: target, intake };
  }
  const uri = parseNbdUri(target);
  if (uri.tls) throw new NbdUnsupportedError(`${target.split(':')[0]}: TLS is not supported yet; use nbd:// or nbd+unix://`);
  if (uri.transport === 'vsock') throw new NbdUnsupportedError('nbd+vsock: vsock is not supported by Node.js sockets');
  const socket: Socket =
    uri.transport === 'unix'
      ? netConnect({ path: uri.socket!, onread: intake.onread, ...duplexOpts })
      : netConnect({ host: uri.host ?? 'localhost', port: uri.port ?? 10809, noDelay: true, onread: intake.onread, ...duplexOpts });
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      socket.destroy();
      reject(signal?.reason);
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      socket.off('error', reject);
      resolve();
    });
    socket.once('error', (e) => {
      signal?.removeEventListener('abort', onAbort);
      reject(e);
    });
  });
  return { socket, intake, exportName: uri.exportName };
}

export class Client {
  private state: State = 'negotiating';
  private structured = false;
  private extended = false;

  private constructor(
    private readonly wire: Wire,
    /** How the server greeted us. */
    readonly style: HandshakeStyle,
    private readonly serverFlags: number,
    private readonly oldstyle: { size: bigint; flags: number } | undefined,
    /** The export named in the URI, used when `go()`/`info()` get no name. */
    readonly defaultExport: string,
    private readonly noZeroes = false,
  ) {}

  /** Connects and reads the greeting. `target` is an NBD URI (nbd://, nbd+unix://) or a connected socket. */
  static async connect(target: string | Duplex, opts: ConnectOptions = {}): Promise<Client> {
    const signals = [opts.signal, opts.timeout !== undefined ? AbortSignal.timeout(opts.timeout) : undefined].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const { socket, intake, exportName } = await openTransport(target, signal);
    (socket as Partial<Socket>).setNoDelay?.(true);
    const wire = new Wire(socket, intake);
    try {
      const f = await wire.next(signal);
      if (f.kind !== 'greeting') throw new ProtocolError(`expected a greeting, got ${f.kind}`);
      const g = f.greeting;
      if (g.style === 'oldstyle') {
        return new Client(wire, 'oldstyle', 0, { size: g.size, flags: g.flags & 0xffff }, exportName ?? '');
      }
      const fixed = (g.flags & HandshakeFlag.FIXED_NEWSTYLE) !== 0;
      let flags = 0;
      if (fixed) flags |= ClientFlag.FIXED_NEWSTYLE;
      if (g.flags & HandshakeFlag.NO_ZEROES) flags |= ClientFlag.NO_ZEROES;
      const noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
      wire.write(encodeClientFlags(flags));
      return new Client(wire, fixed ? 'fixed-newstyle' : 'newstyle', g.flags, undefined, exportName ?? '', noZeroes);
    } catch (e) {
      wire.destroy();
      throw e;
    }
  }

  /** Handshake flags the server sent (`HandshakeFlag`); 0 for oldstyle. */
  get handshakeFlags(): number {
    return this.serverFlags;
  }

  /** Exports the server lists (NBD_OPT_LIST). */
  async list(opts: { signal?: AbortSignal } = {}): Promise<{ name: string; description: string }[]> {
    return this.run('list', true, async () => {
      const out: { name: string; description: string }[] = [];
      await this.option({ kind: 'list' }, opts.signal, (r) => {
        if (r.kind === 'server') out.push({ name: r.name, description: r.description });
      });
      return out;
    });
  }

  /** Size, flags, block sizes and description of an export (NBD_OPT_INFO); the client stays negotiating. */
  async info(name: string = this.defaultExport, opts: { signal?: AbortSignal } = {}): Promise<ExportInfo> {
    if (this.style === 'oldstyle') {
      this.check('info');
      if (name !== '') throw new NbdUnsupportedError('an oldstyle server has no export names');
      return makeExportInfo('', this.oldstyle!.size, this.oldstyle!.flags);
    }
    return this.run('info', true, () => this.infoOrGo('info', name, opts.signal));
  }

  /** Metadata contexts matching `queries` (all, when empty) on `name` (NBD_OPT_LIST_META_CONTEXT). */
  async listMetaContexts(name: string = this.defaultExport, queries: string[] = [], opts: { signal?: AbortSignal } = {}): Promise<string[]> {
    return this.run('listMetaContexts', true, async () => {
      // Servers (nbdkit, qemu) only answer meta-context options once structured replies are on.
      await this.negotiateReplies(true, false, opts.signal);
      const out: string[] = [];
      await this.option({ kind: 'list-meta-context', name, queries }, opts.signal, (r) => {
        if (r.kind === 'meta-context') out.push(r.name);
      });
      return out;
    });
  }

  /** Selects the export and enters the transmission phase. This Client is finished afterwards. */
  async go(name: string = this.defaultExport, opts: GoOptions = {}): Promise<Connection> {
    const { structuredReplies = true, extendedHeaders = false, metaContexts = [], signal } = opts;
    if (this.style === 'oldstyle') {
      this.check('go');
      if (name !== '') throw new NbdUnsupportedError(`an oldstyle server has no export names (asked for "${name}")`);
      if (metaContexts.length > 0) throw new NbdUnsupportedError('an oldstyle server cannot negotiate meta contexts');
      if (extendedHeaders) throw new NbdUnsupportedError('an oldstyle server cannot negotiate extended headers');
      this.state = 'done';
      const info = makeExportInfo('', this.oldstyle!.size, this.oldstyle!.flags);
      return new Connection(this.wire.release(), info, { structured: false, extended: false, metaContexts: new Map() });
    }
    if (this.style === 'newstyle') {
      this.check('go');
      if (metaContexts.length > 0 || extendedHeaders) {
        throw new NbdUnsupportedError('the server is not fixed-newstyle: only NBD_OPT_EXPORT_NAME is possible (no meta contexts, no extended headers)');
      }
      return this.run('go', false, () => this.exportName(name, signal));
    }
    return this.run('go', true, async () => {
      if (structuredReplies || extendedHeaders) await this.negotiateReplies(true, extendedHeaders, signal);
      else if (this.structured) throw new NbdStateError('structured replies were already negotiated; cannot go() without them');
      const contexts = new Map<string, number>();
      if (metaContexts.length > 0) {
        if (!this.structured) throw new NbdUnsupportedError('the server refused structured replies, so meta contexts cannot be used');
        await this.option({ kind: 'set-meta-context', name, queries: metaContexts }, signal, (r) => {
          if (r.kind === 'meta-context') contexts.set(r.name, r.id);
        });
      }
      let info: ExportInfo;
      try {
        info = await this.infoOrGo('go', name, signal);
      } catch (e) {
        if (!(e instanceof NbdOptionError && e.reply === OptionReply.ERR_UNSUP) || this.extended) throw e;
        return this.exportName(name, signal, contexts);
      }
      this.wire.decoder.startTransmission(this.extended);
      return new Connection(this.wire.release(), info, { structured: this.structured, extended: this.extended, metaContexts: contexts });
    });
  }

  /** Ends the negotiation politely (NBD_OPT_ABORT) and closes the socket. */
  async abort(opts: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.state === 'done' || this.state === 'dead') return;
    if (this.state === 'busy') throw new NbdStateError('abort() while another option is in progress');
    this.state = 'dead';
    if (this.style !== 'fixed-newstyle') {
      this.wire.destroy();
      return;
    }
    try {
      this.wire.write(encodeOptionRequest({ kind: 'abort' }));
      // The server SHOULD ack, but may just close: either ends the conversation.
      await Promise.race([this.wire.next(opts.signal).catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
    } finally {
      this.wire.destroy();
    }
  }

  // ------------------------------------------------------------- internals

  private check(what: string): void {
    if (this.state === 'done') throw new NbdStateError(`${what}(): the handshake is over (go() already returned a Connection)`);
    if (this.state === 'dead') throw new NbdStateError(`${what}(): this client is closed${this.wire.failed ? `: ${this.wire.failed.message}` : ''}`);
    if (this.state === 'busy') throw new NbdStateError(`${what}(): another option is in progress; options go one at a time`);
  }

  /** Runs one negotiation step; option errors leave the client usable, anything else kills it. */
  private async run<T>(what: string, needsFixed: boolean, fn: () => Promise<T>): Promise<T> {
    this.check(what);
    if (needsFixed && this.style !== 'fixed-newstyle') {
      throw new NbdUnsupportedError(`${what}(): the server is ${this.style}; only fixed-newstyle servers accept this option`);
    }
    this.state = 'busy';
    try {
      const out = await fn();
      if (this.state === 'busy') this.state = out instanceof Connection ? 'done' : 'negotiating';
      return out;
    } catch (e) {
      if (this.state === 'busy') this.state = e instanceof NbdOptionError && !this.wire.failed ? 'negotiating' : 'dead';
      if (this.state === 'dead') this.wire.destroy();
      throw e;
    }
  }

  /**
   * Sends one option and reads replies until the final one. `each` sees every
   * non-final reply; an error reply throws NbdOptionError (ERR_SHUTDOWN also ends the session).
   */
  private async option(req: OptionRequest, signal: AbortSignal | undefined, each: (r: OptionReplyMessage) => void): Promise<void> {
    const code = encodeOptionRequest(req);
    const option = new DataView(code.buffer, code.byteOffset).getUint32(8);
    this.wire.write(code);
    for (;;) {
      const f = await this.wire.next(signal);
      if (f.kind !== 'option-reply') throw new ProtocolError(`expected an option reply, got ${f.kind}`);
      if (f.option !== option) {
        throw new ProtocolError(`reply for option ${nameOf(Option, f.option)} while waiting for ${nameOf(Option, option)}`);
      }
      const r = decodeOptionReply(f.type, f.data);
      if (r.kind === 'ack') return;
      if (r.kind === 'error') {
        const err = new NbdOptionError(option, r.code, r.message);
        if (r.code === OptionReply.ERR_SHUTDOWN) {
          // The server is going away: the spec asks for a soft disconnect.
          this.wire.write(encodeOptionRequest({ kind: 'abort' }));
          this.state = 'dead';
          this.wire.destroy();
        }
        throw err;
      }
      each(r);
    }
  }

  /** NBD_OPT_EXTENDED_HEADERS (if asked) then NBD_OPT_STRUCTURED_REPLY, once per session. */
  private async negotiateReplies(structured: boolean, extended: boolean, signal: AbortSignal | undefined): Promise<void> {
    if (extended && !this.extended) {
      try {
        await this.option({ kind: 'extended-headers' }, signal, () => {});
        this.extended = true;
        this.structured = true; // extended headers imply structured replies
      } catch (e) {
        if (!(e instanceof NbdOptionError) || this.wire.failed) throw e;
        // Refused: fall back to structured replies.
      }
    }
    if (structured && !this.structured) {
      try {
        await this.option({ kind: 'structured-reply' }, signal, () => {});
        this.structured = true;
      } catch (e) {
        if (!(e instanceof NbdOptionError) || this.wire.failed) throw e;
        // Refused: simple replies it is.
      }
    }
  }

  private async infoOrGo(kind: 'info' | 'go', name: string, signal: AbortSignal | undefined): Promise<ExportInfo> {
    let exp: { size: bigint; flags: number } | undefined;
    let canonical: string | undefined;
    let description: string | undefined;
    let blockSizes: BlockSizes | undefined;
    await this.option({ kind, name, requests: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE] }, signal, (r) => {
      if (r.kind !== 'info') return;
      const i = r.info;
      if (i.kind === 'export') exp = { size: i.size, flags: i.flags };
      else if (i.kind === 'name') canonical = i.name;
      else if (i.kind === 'description') description = i.description;
      else if (i.kind === 'block-size') {
        const b = { min: i.min, preferred: i.preferred, max: i.max };
        if (validBlockSizes(b)) blockSizes = b;
      }
    });
    if (!exp) throw new ProtocolError(`NBD_OPT_${kind.toUpperCase()} acknowledged without NBD_INFO_EXPORT`);
    return makeExportInfo(canonical ?? name, exp.size, exp.flags, { blockSizes, description });
  }

  private async exportName(name: string, signal: AbortSignal | undefined, contexts = new Map<string, number>()): Promise<Connection> {
    this.wire.decoder.expectExportNameReply(this.noZeroes);
    this.wire.write(encodeOptionRequest({ kind: 'export-name', name }));
    let f;
    try {
      f = await this.wire.next(signal);
    } catch (e) {
      throw new NbdOptionError(Option.EXPORT_NAME, OptionReply.ERR_UNKNOWN, `the server closed the connection: no export "${name}"?`);
    }
    if (f.kind !== 'export-name-reply') throw new ProtocolError(`expected the export-name reply, got ${f.kind}`);
    this.state = 'done';
    const info = makeExportInfo(name, f.size, f.flags);
    // Meta contexts set before a refused GO still apply to this export (nbd-server-style servers).
    return new Connection(this.wire.release(), info, { structured: this.structured, extended: false, metaContexts: contexts });
  }
}
