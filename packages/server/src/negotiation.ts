// The server's side of the handshake, without I/O: decoded client frames in,
// replies out as values, and what the connection does next. One state record; one
// handler per option, in a table (nbdkit's protocol-handshake-newstyle.c).

import type { TlsIdentity } from '@nbd/node';
import {
  ClientFlag,
  type ClientFrame,
  decodeOptionRequest,
  encodeExportNameReply,
  encodeOptionReply,
  type Greeting,
  HandshakeFlag,
  Info,
  MetaContext,
  nameOf,
  Option,
  OptionReply,
  type OptionReplyMessage,
  type OptionRequest,
} from '@nbd/protocol';
import type { Device, Export } from './device.js';
import { blockSizesOf, isReadOnly, type Session, transmissionFlags } from './session.js';

/** What `ServeOptions.open` receives. */
export interface OpenContext {
  /** The export the client selected (by `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`). */
  export: Export;
  /** The client, for logs and access checks: "host:port", a unix socket path, or "socket". */
  clientAddress: string;
  /** True when the export will be served read-only (`ServeOptions.readOnly` or `Export.readOnly`). */
  readOnly: boolean;
  /** Who the client authenticated as over TLS (PSK username or certificate subject); undefined without TLS. */
  tls: TlsIdentity | undefined;
}

/** A message to the client, as a value; the connection sends it encoded by `encodeServerMessage`. */
export type ServerMessage =
  | { kind: 'option-reply'; option: number; reply: OptionReplyMessage }
  | { kind: 'export-name-reply'; size: bigint; flags: number; noZeroes: boolean };

export function encodeServerMessage(m: ServerMessage): Uint8Array {
  return m.kind === 'option-reply'
    ? encodeOptionReply(m.option, m.reply)
    : encodeExportNameReply({ size: m.size, flags: m.flags }, m.noZeroes);
}

/** What the connection does after one frame: send `send`, then go on as `next` says. */
export type NegotiationStep =
  | { next: 'negotiate'; send: ServerMessage[] }
  | { next: 'transmit'; send: ServerMessage[]; session: Session; ownsDevice: boolean }
  /** STARTTLS acknowledged: upgrade to TLS, then call `afterTls`. */
  | { next: 'starttls'; send: ServerMessage[] }
  | { next: 'close'; send: ServerMessage[]; reason: string };

export interface NegotiationConfig {
  exports: readonly Export[];
  /** Largest READ/WRITE payload, advertised in NBD_INFO_BLOCK_SIZE. */
  maxPayload: number;
  /** Server-wide read-only. */
  readOnly: boolean;
  /** A device per connection (nbdkit's open); the export's device otherwise. */
  open?: (ctx: OpenContext) => Device | Promise<Device>;
  clientAddress: string;
  /**
   * 'off' (NOTLS, the default): STARTTLS is refused with ERR_POLICY. 'on' (SELECTIVETLS):
   * exports marked `tlsOnly` need TLS. 'require' (FORCEDTLS): every option but STARTTLS
   * and ABORT needs TLS.
   */
  tls?: 'off' | 'on' | 'require';
}

/** Options a client may send before we give up on it (libnbd's opt mode needs a handful). */
export const MAX_OPTIONS = 1024;
const BASE_ALLOCATION_ID = 1;

/** Everything negotiated so far. */
interface State {
  fixed: boolean;
  noZeroes: boolean;
  structured: boolean;
  extended: boolean;
  /** Meta contexts selected by SET_META_CONTEXT, valid only for the export they named. */
  meta: { exportName: string; ids: Map<number, string> } | undefined;
  options: number;
  shuttingDown: boolean;
  /** TLS is active, and who the client is over it. */
  tls: TlsIdentity | undefined;
}

type Kind = OptionRequest['kind'];
type Handler<K extends Kind> = (
  n: Negotiation,
  req: Extract<OptionRequest, { kind: K }>,
  option: number,
) => NegotiationStep | Promise<NegotiationStep>;

const reply = (option: number, r: OptionReplyMessage): ServerMessage => ({ kind: 'option-reply', option, reply: r });
const ack = (option: number) => reply(option, { kind: 'ack' });
const more = (...send: ServerMessage[]): NegotiationStep => ({ next: 'negotiate', send });
const close = (reason: string, ...send: ServerMessage[]): NegotiationStep => ({ next: 'close', send, reason });
/** Error messages quote what a client sent (a name of up to 4 KiB): clipped to stay within the spec's 4096 bytes. */
const MAX_MESSAGE = 1024;
const refuse = (option: number, code: number, message: string): NegotiationStep =>
  more(reply(option, { kind: 'error', code, message: message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}…` : message }));

export class Negotiation {
  private readonly state: State = {
    fixed: false,
    noZeroes: false,
    structured: false,
    extended: false,
    meta: undefined,
    options: 0,
    shuttingDown: false,
    tls: undefined,
  };

  constructor(readonly config: NegotiationConfig) {}

  /** The newstyle greeting the server sends first. */
  greeting(): Greeting {
    return { style: 'newstyle', flags: HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES };
  }

  /** The server is shutting down: options but ABORT get ERR_SHUTDOWN, EXPORT_NAME closes. */
  shutdown(): void {
    this.state.shuttingDown = true;
  }

  /** One frame from the client: the client flags, then one option at a time. */
  handle(frame: ClientFrame): NegotiationStep | Promise<NegotiationStep> {
    const s = this.state;
    if (frame.kind === 'client-flags') return this.clientFlags(frame.flags);
    if (frame.kind !== 'option') return close(`unexpected ${frame.kind} during the handshake`);
    const { option, data } = frame;
    if (++s.options > MAX_OPTIONS) return close(`more than ${MAX_OPTIONS} options`);
    // A plain-newstyle client cannot parse option replies.
    if (!s.fixed && option !== Option.EXPORT_NAME) return close(`option ${nameOf(Option, option)} from a non-fixed-newstyle client`);
    if (s.shuttingDown && option !== Option.ABORT) {
      if (option === Option.EXPORT_NAME) return close('server is shutting down');
      return refuse(option, OptionReply.ERR_SHUTDOWN, 'server is shutting down');
    }
    if (this.config.tls === 'require' && s.tls === undefined && option !== Option.STARTTLS && option !== Option.ABORT) {
      if (option === Option.EXPORT_NAME) return close('EXPORT_NAME without TLS, which this server requires');
      return refuse(option, OptionReply.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
    }
    let req: OptionRequest;
    try {
      req = decodeOptionRequest(option, data);
    } catch (e) {
      // No error reply exists for EXPORT_NAME: refusing it means closing.
      if (option === Option.EXPORT_NAME) return close(`bad EXPORT_NAME: ${(e as Error).message}`);
      return refuse(option, OptionReply.ERR_INVALID, (e as Error).message);
    }
    return (handlers[req.kind] as Handler<Kind>)(this, req, option);
  }

  /**
   * TLS is up: everything negotiated before is forgotten (structured replies, extended
   * headers, meta contexts), as the spec asks; the options that follow come over TLS.
   */
  afterTls(identity: TlsIdentity): void {
    const s = this.state;
    s.tls = identity;
    s.structured = false;
    s.extended = false;
    s.meta = undefined;
  }

  private clientFlags(flags: number): NegotiationStep {
    const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
    if ((flags & ~known) !== 0) return close(`unknown client flags 0x${flags.toString(16)}`);
    this.state.fixed = (flags & ClientFlag.FIXED_NEWSTYLE) !== 0;
    this.state.noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
    return more();
  }

  // ------------------------------------------------------------- helpers for the handlers

  /** @internal */ find(name: string): Export | undefined {
    return name === '' ? this.config.exports[0] : this.config.exports.find((e) => e.name === name);
  }

  /** @internal Whether `exp` may be used now: a `tlsOnly` export needs TLS (SELECTIVETLS). */
  allowed(exp: Export): boolean {
    return exp.tlsOnly !== true || this.state.tls !== undefined;
  }

  /** @internal SELECTIVETLS before TLS: TLS-only exports are hidden, and unknown ones look like them. */
  get hidesExports(): boolean {
    return this.config.tls === 'on' && this.state.tls === undefined;
  }

  /** @internal The export's device, or a fresh one from the `open` hook (then owned by the connection). */
  async openDevice(exp: Export): Promise<{ device: Device; owned: boolean }> {
    const { open, readOnly, clientAddress } = this.config;
    if (open === undefined) return { device: exp.device, owned: false };
    const ctx = { export: exp, clientAddress, readOnly: readOnly || exp.readOnly === true, tls: this.state.tls };
    return { device: await open(ctx), owned: true };
  }

  /** @internal */ sessionFor(exp: Export, device: Device): Session {
    const s = this.state;
    const metaContexts = s.meta !== undefined && this.find(s.meta.exportName) === exp ? s.meta.ids : new Map<number, string>();
    return {
      export: exp,
      device,
      flags: transmissionFlags(device, isReadOnly(exp, device, this.config.readOnly), s.structured, s.extended),
      blockSizes: blockSizesOf(device, this.config.maxPayload),
      structured: s.structured,
      extended: s.extended,
      metaContexts,
    };
  }

  /** @internal */ get negotiated(): State {
    return this.state;
  }
}

// ---------------------------------------------------------------- the option table

async function exportName(n: Negotiation, req: { name: string }): Promise<NegotiationStep> {
  if (n.negotiated.extended) return close('EXPORT_NAME after EXTENDED_HEADERS');
  const exp = n.find(req.name);
  if (exp === undefined) return close(`unknown export "${req.name}"`);
  if (!n.allowed(exp)) return close(`EXPORT_NAME "${exp.name}" without TLS, which that export requires`);
  let opened: { device: Device; owned: boolean };
  try {
    opened = await n.openDevice(exp);
  } catch (e) {
    return close(`cannot open export "${exp.name}": ${(e as Error).message}`);
  }
  const { device, owned } = opened;
  const session = n.sessionFor(exp, device);
  const answer: ServerMessage = {
    kind: 'export-name-reply',
    size: BigInt(exp.size),
    flags: session.flags,
    noZeroes: n.negotiated.noZeroes,
  };
  return { next: 'transmit', send: [answer], session, ownsDevice: owned };
}

async function infoOrGo(
  n: Negotiation,
  req: { kind: 'info' | 'go'; name: string; requests: number[] },
  option: number,
): Promise<NegotiationStep> {
  const exp = n.find(req.name);
  // SELECTIVETLS before TLS: an unknown export gets the answer a TLS-only one gets (the
  // spec allows it), so a plaintext client cannot tell which TLS-only exports exist.
  if (exp === undefined ? n.hidesExports : !n.allowed(exp)) {
    return refuse(option, OptionReply.ERR_TLS_REQD, `export "${req.name}" needs TLS, if it exists`);
  }
  if (exp === undefined) return refuse(option, OptionReply.ERR_UNKNOWN, `unknown export "${req.name}"`);
  const minBlock = exp.device.blockSizes?.min ?? 1;
  if (req.kind === 'go' && !req.requests.includes(Info.BLOCK_SIZE) && minBlock > 1) {
    return refuse(option, OptionReply.ERR_BLOCK_SIZE_REQD, `export "${exp.name}" needs ${minBlock}-byte aligned requests`);
  }
  let opened: { device: Device; owned: boolean };
  try {
    opened = await n.openDevice(exp);
  } catch (e) {
    return refuse(option, OptionReply.ERR_UNKNOWN, `cannot open export "${exp.name}": ${(e as Error).message}`);
  }
  const session = n.sessionFor(exp, opened.device);
  const send = [reply(option, { kind: 'info', info: { kind: 'export', size: BigInt(exp.size), flags: session.flags } })];
  if (req.requests.includes(Info.NAME)) send.push(reply(option, { kind: 'info', info: { kind: 'name', name: exp.name } }));
  if (req.requests.includes(Info.DESCRIPTION) && exp.description !== undefined) {
    send.push(reply(option, { kind: 'info', info: { kind: 'description', description: exp.description } }));
  }
  // Always sent: the client may use it even unrequested, and it tells our payload limit.
  send.push(reply(option, { kind: 'info', info: { kind: 'block-size', ...session.blockSizes } }), ack(option));
  if (req.kind === 'go') return { next: 'transmit', send, session, ownsDevice: opened.owned };
  if (opened.owned) await opened.device.close?.();
  return more(...send);
}

function structuredReply(n: Negotiation, _req: unknown, option: number): NegotiationStep {
  const s = n.negotiated;
  if (s.structured)
    return refuse(
      option,
      OptionReply.ERR_INVALID,
      s.extended ? 'extended headers already negotiated' : 'structured replies already negotiated',
    );
  s.structured = true;
  s.meta = undefined;
  return more(ack(option));
}

function extendedHeaders(n: Negotiation, _req: unknown, option: number): NegotiationStep {
  const s = n.negotiated;
  if (s.extended) return refuse(option, OptionReply.ERR_INVALID, 'extended headers already negotiated');
  s.extended = true;
  s.structured = true;
  s.meta = undefined;
  return more(ack(option));
}

function metaContext(
  n: Negotiation,
  req: { kind: 'list-meta-context' | 'set-meta-context'; name: string; queries: string[] },
  option: number,
): NegotiationStep {
  const s = n.negotiated;
  const set = req.kind === 'set-meta-context';
  if (set) s.meta = undefined; // SET replaces the selection, even when it fails
  if (!s.structured) return refuse(option, OptionReply.ERR_INVALID, 'meta contexts need structured replies');
  const exp = n.find(req.name);
  // ERR_TLS_REQD is only for INFO, GO and EXPORT_NAME: a TLS-only export before TLS is
  // answered as an unknown one, with the same words, so its existence does not show.
  if (exp === undefined || !n.allowed(exp)) return refuse(option, OptionReply.ERR_UNKNOWN, `unknown export "${req.name}"`);
  // base:allocation is always offered: devices without extents report all data.
  const matches = set
    ? req.queries.some((q) => q === MetaContext.BASE_ALLOCATION)
    : req.queries.length === 0 || req.queries.some((q) => q === MetaContext.BASE_ALLOCATION || q === 'base:');
  const send: ServerMessage[] = [];
  if (matches) send.push(reply(option, { kind: 'meta-context', id: set ? BASE_ALLOCATION_ID : 0, name: MetaContext.BASE_ALLOCATION }));
  if (set) s.meta = { exportName: req.name, ids: new Map(matches ? [[BASE_ALLOCATION_ID, MetaContext.BASE_ALLOCATION]] : []) };
  send.push(ack(option));
  return more(...send);
}

const handlers: { [K in Kind]: Handler<K> } = {
  'export-name': exportName,
  abort: (_n, _req, option) => close('client sent NBD_OPT_ABORT', ack(option)),
  // TLS-only exports are left out of the list until TLS is up (SELECTIVETLS may omit them).
  list: (n, _req, option) =>
    more(
      ...n.config.exports
        .filter((e) => n.allowed(e))
        .map((e) => reply(option, { kind: 'server', name: e.name, description: e.description ?? '' })),
      ack(option),
    ),
  starttls: (n, _req, option) => {
    if ((n.config.tls ?? 'off') === 'off') return refuse(option, OptionReply.ERR_POLICY, 'TLS is not enabled on this server');
    if (n.negotiated.tls !== undefined) return refuse(option, OptionReply.ERR_INVALID, 'TLS is already active');
    return { next: 'starttls', send: [ack(option)] };
  },
  info: infoOrGo,
  go: infoOrGo,
  'structured-reply': structuredReply,
  'extended-headers': extendedHeaders,
  'list-meta-context': metaContext,
  'set-meta-context': metaContext,
  unknown: (_n, req, option) => refuse(option, OptionReply.ERR_UNSUP, `option ${req.code} is not supported`),
};

/**
 * Oldstyle, opt-in: no options at all. The server sends a 152-byte greeting with the
 * one export's size and flags, and transmission starts (simple replies only).
 */
export function oldstyleGreeting(session: Session): Greeting {
  return { style: 'oldstyle', size: BigInt(session.export.size), flags: session.flags };
}
