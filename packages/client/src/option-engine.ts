// Negotiation without I/O: one state record (greeting → options → GO or
// EXPORT_NAME → transmission) and a table of option steps over it, each with its
// arguments and result typed (the plans that say which options go() and
// listMetaContexts() send next are in option-plans.ts). The engine turns a step into
// request bytes and consumes the decoded frames that answer it; the Client feeds it
// from a transport. Unit tests drive it with plain values.
import {
  ClientFlag,
  decodeOptionReply,
  encodeClientFlags,
  encodeOptionRequest,
  type Greeting,
  HandshakeFlag,
  Info,
  NbdOptionError,
  NbdStateError,
  NbdUnsupportedError,
  nameOf,
  Option,
  OptionReply,
  type OptionReplyMessage,
  type OptionRequest,
  optionCode,
  ProtocolError,
  type ServerFrame,
} from '@nbd/protocol';
import { type BlockSizes, type ExportInfo, makeExportInfo, validBlockSizes } from './export-info.js';

/** How the server greeted us. */
export type HandshakeStyle = 'oldstyle' | 'newstyle' | 'fixed-newstyle';

/** An export as NBD_OPT_LIST names it. */
export interface ExportListing {
  /** The export's name, as `go()`/`info()` take it ("" is the default export). */
  name: string;
  /** The server's description of it; "" when it sent none. */
  description: string;
}

/** Everything negotiation has learnt so far: the one record the option steps read and update. */
export interface Negotiation {
  phase: 'greeting' | 'options' | 'transmission' | 'closed';
  style: HandshakeStyle | undefined;
  /** Handshake flags the server sent (0 for oldstyle). */
  handshakeFlags: number;
  /** NO_ZEROES negotiated: the EXPORT_NAME reply is 10 bytes. */
  noZeroes: boolean;
  /** An oldstyle greeting's export. */
  oldstyle: { size: bigint; flags: number } | undefined;
  structured: boolean;
  extended: boolean;
  /** Options refused that negotiation goes on without (not asked again). */
  refused: Set<number>;
  /** Selected by the last SET_META_CONTEXT (name → id), and the export it named. */
  metaContexts: Map<string, number>;
  metaContextsFor: string | undefined;
  /** The export GO or EXPORT_NAME entered transmission with. */
  export: ExportInfo | undefined;
  /** STARTTLS was acknowledged: what follows goes over TLS. */
  tls: boolean;
}

/** The arguments and result of each option step. */
interface Steps {
  list: { args: undefined; result: ExportListing[] };
  info: { args: { name: string }; result: ExportInfo };
  go: { args: { name: string }; result: ExportInfo | undefined };
  'export-name': { args: { name: string }; result: ExportInfo };
  'structured-reply': { args: undefined; result: boolean };
  'extended-headers': { args: undefined; result: boolean };
  'list-meta-context': { args: { name: string; queries: readonly string[] }; result: string[] };
  'set-meta-context': { args: { name: string; queries: readonly string[] }; result: Map<string, number> };
  abort: { args: undefined; result: undefined };
  starttls: { args: undefined; result: true };
}
export type StepKind = keyof Steps;
export type StepResult<K extends StepKind> = Steps[K]['result'];
/** One option to send: its kind and arguments. */
export interface StepCall<K extends StepKind> {
  kind: K;
  args: Steps[K]['args'];
}
/** Any one option to send (what the plans yield). */
export type AnyStepCall = { [K in StepKind]: StepCall<K> }[StepKind];

/** One option: its request, what its ACK means, and which refusals negotiation survives. */
interface OptionStep<K extends StepKind> {
  request(args: Steps[K]['args']): OptionRequest;
  /** The final ACK: the result, from the replies before it; may update the record. */
  ack(n: Negotiation, replies: OptionReplyMessage[], args: Steps[K]['args']): StepResult<K>;
  /** A refusal negotiation can do without: record it and return the result. Undefined: the call fails. */
  refused?(n: Negotiation, err: NbdOptionError): { value: StepResult<K> } | undefined;
  /** NBD_OPT_EXPORT_NAME only: its reply (no option replies) enters transmission. */
  exportNameReply?(n: Negotiation, reply: { size: bigint; flags: number }, args: Steps[K]['args']): StepResult<K>;
}

const INFO_REQUESTS = [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE];

const STEPS: { [K in StepKind]: OptionStep<K> } = {
  list: {
    request: () => ({ kind: 'list' }),
    ack: (_n, replies) => replies.flatMap((r) => (r.kind === 'server' ? [{ name: r.name, description: r.description }] : [])),
  },
  info: {
    request: (a) => ({ kind: 'info', name: a.name, requests: INFO_REQUESTS }),
    ack: (_n, replies, a) => exportInfoOf('INFO', replies, a.name),
  },
  go: {
    request: (a) => ({ kind: 'go', name: a.name, requests: INFO_REQUESTS }),
    ack: (n, replies, a) => {
      n.export = exportInfoOf('GO', replies, a.name);
      n.phase = 'transmission';
      return n.export;
    },
    // ERR_UNSUP: an old server; EXPORT_NAME follows (impossible after extended headers).
    refused: (n, err) => {
      if (err.reply !== OptionReply.ERR_UNSUP || n.extended) return undefined;
      n.refused.add(Option.GO);
      return { value: undefined };
    },
  },
  'export-name': {
    request: (a) => ({ kind: 'export-name', name: a.name }),
    ack: () => {
      throw new ProtocolError('NBD_OPT_EXPORT_NAME has no option replies');
    },
    exportNameReply: (n, reply, a) => {
      n.export = makeExportInfo(a.name, reply.size, reply.flags);
      n.phase = 'transmission';
      return n.export;
    },
  },
  'structured-reply': {
    request: () => ({ kind: 'structured-reply' }),
    ack: (n) => (n.structured = true),
    refused: (n) => refuse(n, Option.STRUCTURED_REPLY), // simple replies it is
  },
  'extended-headers': {
    request: () => ({ kind: 'extended-headers' }),
    ack: (n) => (n.extended = n.structured = true), // extended headers imply structured replies
    refused: (n) => refuse(n, Option.EXTENDED_HEADERS), // structured replies next
  },
  'list-meta-context': {
    request: (a) => ({ kind: 'list-meta-context', name: a.name, queries: [...a.queries] }),
    ack: (_n, replies) => replies.flatMap((r) => (r.kind === 'meta-context' ? [r.name] : [])),
  },
  'set-meta-context': {
    request: (a) => ({ kind: 'set-meta-context', name: a.name, queries: [...a.queries] }),
    ack: (n, replies, a) => {
      n.metaContexts = new Map(replies.flatMap((r) => (r.kind === 'meta-context' ? [[r.name, r.id] as const] : [])));
      n.metaContextsFor = a.name;
      return n.metaContexts;
    },
  },
  // No refusal is survived here: the Client decides whether plaintext may go on (tls mode 'allow').
  starttls: {
    request: () => ({ kind: 'starttls' }),
    ack: (n) => {
      // Over TLS everything is negotiated afresh: the spec has both sides forget what came before.
      n.tls = true;
      n.structured = n.extended = false;
      n.metaContexts = new Map();
      n.metaContextsFor = undefined;
      n.refused.clear();
      return true;
    },
  },
  abort: {
    request: () => ({ kind: 'abort' }),
    ack: (n) => {
      n.phase = 'closed';
      return undefined;
    },
    refused: (n) => {
      n.phase = 'closed';
      return { value: undefined };
    },
  },
};

/** The step of `kind`, its arguments and result tied to it. */
function stepOf<K extends StepKind>(kind: K): OptionStep<K> {
  return STEPS[kind];
}

/** An optional feature refused: negotiation goes on without it and does not ask again. */
function refuse(n: Negotiation, option: number): { value: false } {
  n.refused.add(option);
  return { value: false };
}

/** NBD_INFO_EXPORT and friends from INFO/GO replies; the server MUST have sent NBD_INFO_EXPORT. */
function exportInfoOf(kind: 'INFO' | 'GO', replies: OptionReplyMessage[], name: string): ExportInfo {
  let exp: { size: bigint; flags: number } | undefined;
  let canonical: string | undefined;
  let description: string | undefined;
  let blockSizes: BlockSizes | undefined;
  for (const r of replies) {
    if (r.kind !== 'info') continue;
    const i = r.info;
    if (i.kind === 'export') exp = { size: i.size, flags: i.flags };
    else if (i.kind === 'name') canonical = i.name;
    else if (i.kind === 'description') description = i.description;
    else if (i.kind === 'block-size') {
      const b = { min: i.min, preferred: i.preferred, max: i.max };
      if (validBlockSizes(b)) blockSizes = b; // invalid sizes are ignored, not obeyed (README gap)
    }
  }
  if (!exp) throw new ProtocolError(`NBD_OPT_${kind} acknowledged without NBD_INFO_EXPORT (the server MUST send it before ACK)`);
  return makeExportInfo(canonical ?? name, exp.size, exp.flags, { blockSizes, description });
}

/** What answers a step: option replies, the EXPORT_NAME reply, or nothing we wait for. */
export type Expect = 'option-reply' | 'export-name-reply';

/** A frame consumed: more are needed, or the step (or the greeting) is over with its result. */
export type StepOutcome<T> = { done: false } | { done: true; value: T };

/** An option sent: its bytes, what answers it, and where the frames that answer it go. */
export interface StartedStep<T> {
  bytes: Uint8Array;
  expect: Expect;
  /** Consumes one frame of the answer (ProtocolError for a frame that breaks the protocol). */
  feed(f: ServerFrame): StepOutcome<T>;
}

/** The option in progress: its code and the replies kept until its final one. */
interface InProgress {
  option: number;
  replies: OptionReplyMessage[];
  bytes: number;
}

/** Bounds on one option's replies before its final one (what a server could otherwise stream forever). */
export interface OptionReplyLimits {
  /** Replies (NBD_REP_SERVER, NBD_REP_INFO, NBD_REP_META_CONTEXT, unknown types) before the final one. */
  replies: number;
  /** Bytes of reply data in all, before the final one. */
  bytes: number;
}

/** 100 000 replies and 32 MiB: far beyond any real export or context list, a few tens of MiB of memory at most. */
export const DEFAULT_OPTION_REPLY_LIMITS: Readonly<OptionReplyLimits> = { replies: 100_000, bytes: 32 * 1024 * 1024 };

/** The negotiation engine: state record in, request bytes out, frames in, results out. */
export class OptionEngine {
  readonly state: Negotiation = {
    phase: 'greeting',
    style: undefined,
    handshakeFlags: 0,
    noZeroes: false,
    oldstyle: undefined,
    structured: false,
    extended: false,
    refused: new Set(),
    metaContexts: new Map(),
    metaContextsFor: undefined,
    export: undefined,
    tls: false,
  };
  private current: InProgress | undefined;

  constructor(private readonly limits: Readonly<OptionReplyLimits> = DEFAULT_OPTION_REPLY_LIMITS) {}

  /** An option is sent and its final reply has not come yet. */
  get busy(): boolean {
    return this.current !== undefined;
  }

  /** NBD_OPT_ABORT sent without waiting for its reply (the soft disconnect ERR_SHUTDOWN asks for). */
  softDisconnect(): Uint8Array {
    this.state.phase = 'closed';
    this.current = undefined;
    return encodeOptionRequest({ kind: 'abort' });
  }

  /** Bytes of the option `call`; the frames that answer it go to the `feed` returned. */
  start<K extends StepKind>(call: StepCall<K>): StartedStep<StepResult<K>> {
    const n = this.state;
    if (n.phase !== 'options')
      throw new NbdStateError(`cannot send an option ${n.phase === 'greeting' ? 'before the greeting' : `in phase ${n.phase}`}`);
    if (this.current !== undefined) throw new NbdStateError('an option is in progress; options go one at a time');
    const step = stepOf(call.kind);
    const req = step.request(call.args);
    if (req.kind !== 'export-name' && n.style !== 'fixed-newstyle') {
      throw new NbdUnsupportedError(
        `the server is ${n.style}; only fixed-newstyle servers accept NBD_OPT_${nameOf(Option, optionCode(req))}`,
      );
    }
    const cur: InProgress = { option: optionCode(req), replies: [], bytes: 0 };
    this.current = cur;
    return {
      bytes: encodeOptionRequest(req),
      expect: req.kind === 'export-name' ? 'export-name-reply' : 'option-reply',
      feed: (f) => this.answer(cur, step, call.args, f),
    };
  }

  /**
   * The server's greeting: style and flags recorded; the client flags to send back
   * (undefined for oldstyle).
   */
  greet(f: ServerFrame): StepOutcome<Uint8Array | undefined> {
    if (f.kind !== 'greeting') throw new ProtocolError(`expected the server's greeting, got ${f.kind}`);
    return { done: true, value: this.clientFlagsFor(f.greeting) };
  }

  /**
   * One frame answering the option `cur`. Throws NbdOptionError for a refusal the step
   * cannot do without, and ProtocolError for a frame that breaks the protocol.
   */
  private answer<K extends StepKind>(
    cur: InProgress,
    step: OptionStep<K>,
    args: Steps[K]['args'],
    f: ServerFrame,
  ): StepOutcome<StepResult<K>> {
    if (this.current !== cur) throw new ProtocolError(`unexpected ${f.kind} during the handshake: no option is in progress`);
    if (f.kind === 'export-name-reply') {
      if (step.exportNameReply === undefined)
        throw new ProtocolError(`an EXPORT_NAME reply while waiting for NBD_OPT_${nameOf(Option, cur.option)}`);
      this.current = undefined;
      return { done: true, value: step.exportNameReply(this.state, f, args) };
    }
    if (f.kind !== 'option-reply') throw new ProtocolError(`expected an option reply, got ${f.kind}`);
    if (f.option !== cur.option) {
      throw new ProtocolError(
        `reply for option NBD_OPT_${nameOf(Option, f.option)} while waiting for NBD_OPT_${nameOf(Option, cur.option)}`,
      );
    }
    const r = decodeOptionReply(f.type, f.data);
    if (r.kind !== 'ack' && r.kind !== 'error') {
      this.keep(cur, r, f.data.length);
      return { done: false };
    }
    this.current = undefined;
    if (r.kind === 'ack') return { done: true, value: step.ack(this.state, cur.replies, args) };
    const err = new NbdOptionError(cur.option, r.code, r.message);
    if (r.code === OptionReply.ERR_SHUTDOWN) {
      this.state.phase = 'closed'; // the server is going away: the spec asks for a soft disconnect
      throw err;
    }
    const kept = step.refused?.(this.state, err);
    if (kept === undefined) throw err;
    return { done: true, value: kept.value };
  }

  /** Keeps a reply until the final one, within the limits: past them the server is streaming, not answering. */
  private keep(cur: InProgress, r: OptionReplyMessage, bytes: number): void {
    const { replies, bytes: maxBytes } = this.limits;
    const option = `NBD_OPT_${nameOf(Option, cur.option)}`;
    if (cur.replies.length >= replies)
      throw new ProtocolError(`${option}: the server sent more than ${replies} replies before its final one (maxOptionReplies)`);
    cur.bytes += bytes;
    if (cur.bytes > maxBytes)
      throw new ProtocolError(`${option}: the server's replies passed ${maxBytes} bytes before its final one (maxOptionReplyBytes)`);
    cur.replies.push(r);
  }

  private clientFlagsFor(g: Greeting): Uint8Array | undefined {
    const n = this.state;
    if (n.phase !== 'greeting') throw new ProtocolError('a second greeting');
    n.phase = 'options';
    if (g.style === 'oldstyle') {
      n.style = 'oldstyle';
      n.oldstyle = { size: g.size, flags: g.flags & 0xffff };
      return undefined;
    }
    const fixed = (g.flags & HandshakeFlag.FIXED_NEWSTYLE) !== 0;
    n.style = fixed ? 'fixed-newstyle' : 'newstyle';
    n.handshakeFlags = g.flags;
    n.noZeroes = (g.flags & HandshakeFlag.NO_ZEROES) !== 0;
    return encodeClientFlags((fixed ? ClientFlag.FIXED_NEWSTYLE : 0) | (n.noZeroes ? ClientFlag.NO_ZEROES : 0));
  }
}
