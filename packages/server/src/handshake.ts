// The server's side of the handshake: greeting, client flags, then one bounded
// loop with one `switch` case per NBD_OPT_*. It ends with a Session (enter
// transmission) or undefined (close the connection).
import {
  ClientFlag,
  type ClientFrame,
  HandshakeFlag,
  Info,
  Limits,
  MetaContext,
  Option,
  OptionReply,
  type OptionReplyMessage,
  TransmissionFlag,
  decodeOptionRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  nameOf,
} from '@nbd/protocol';
import type { BlockSizes, Device, Export } from './device.js';
import type { FrameSource } from './frame-source.js';
import type { Logger } from './logger.js';
import type { Session } from './session.js';

/** What `ServeOptions.open` receives. */
export interface OpenContext {
  export: Export;
  clientAddress: string;
  readOnly: boolean;
}

export interface HandshakeContext {
  src: FrameSource;
  write: (bytes: Uint8Array) => void;
  exports: readonly Export[];
  maxPayload: number;
  /** Server-wide read-only. */
  readOnly: boolean;
  open?: (ctx: OpenContext) => Device | Promise<Device>;
  clientAddress: string;
  logger: Logger;
  /** True once the server is shutting down: options get ERR_SHUTDOWN. */
  shuttingDown: () => boolean;
}

export interface Negotiated {
  session: Session;
  /** The device came from `open` and must be closed with the connection. */
  ownsDevice: boolean;
}

/** Options a client may send before we give up on it (libnbd's opt mode needs a handful). */
const MAX_OPTIONS = 1024;
const BASE_ALLOCATION_ID = 1;

/** Transmission flags for `device`, derived from what it implements (nbdkit's protocol_common_open). */
export function transmissionFlags(device: Device, readOnly: boolean, structured: boolean, extended: boolean): number {
  let f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_CACHE;
  if (readOnly) f |= TransmissionFlag.READ_ONLY;
  if (device.sync) f |= TransmissionFlag.SEND_FLUSH;
  if (!readOnly) {
    f |= TransmissionFlag.SEND_WRITE_ZEROES;
    if (device.sync || device.fua) f |= TransmissionFlag.SEND_FUA;
    if (device.trim) f |= TransmissionFlag.SEND_TRIM;
    if (device.zero) f |= TransmissionFlag.SEND_FAST_ZERO;
  }
  if (structured) f |= TransmissionFlag.SEND_DF;
  if (device.multiConn) f |= TransmissionFlag.CAN_MULTI_CONN;
  if (device.rotational) f |= TransmissionFlag.ROTATIONAL;
  if (extended) f |= TransmissionFlag.BLOCK_STATUS_PAYLOAD;
  return f;
}

/** The block sizes a device gets: its own, capped by the server's maximum payload. */
export function blockSizesOf(device: Device, maxPayload: number): BlockSizes {
  const b = device.blockSizes;
  const min = b?.min ?? 1;
  const preferred = Math.max(b?.preferred ?? Limits.DEFAULT_PREFERRED_BLOCK, min);
  return { min, preferred, max: Math.max(Math.min(b?.max ?? maxPayload, maxPayload), min) };
}

export async function negotiate(ctx: HandshakeContext): Promise<Negotiated | undefined> {
  const { src, write, logger } = ctx;
  write(encodeGreeting({ style: 'newstyle', flags: HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES }));

  const first = await src.next();
  if (first === null || first.kind !== 'client-flags') return undefined;
  const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
  if ((first.flags & ~known) !== 0) {
    logger.warn(`${ctx.clientAddress}: unknown client flags 0x${first.flags.toString(16)}, closing`);
    return undefined;
  }
  const fixed = (first.flags & ClientFlag.FIXED_NEWSTYLE) !== 0;
  const noZeroes = (first.flags & ClientFlag.NO_ZEROES) !== 0;

  let structured = false;
  let extended = false;
  // Meta contexts selected by SET_META_CONTEXT, valid only for the export they named.
  let meta: { exportName: string; ids: Map<number, string> } | undefined;

  const reply = (option: number, msg: OptionReplyMessage) => write(encodeOptionReply(option, msg));
  const error = (option: number, code: number, message: string) => {
    logger.debug(`${ctx.clientAddress}: option ${nameOf(Option, option)}: ${nameOf(OptionReply, code)}: ${message}`);
    reply(option, { kind: 'error', code, message });
  };
  const find = (name: string): Export | undefined => (name === '' ? ctx.exports[0] : ctx.exports.find((e) => e.name === name));
  const isReadOnly = (exp: Export, device: Device) =>
    ctx.readOnly || exp.readOnly === true || device.readOnly === true || device.writeAt === undefined;
  const openDevice = async (exp: Export): Promise<{ device: Device; owned: boolean }> => {
    if (ctx.open === undefined) return { device: exp.device, owned: false };
    const readOnly = ctx.readOnly || exp.readOnly === true;
    return { device: await ctx.open({ export: exp, clientAddress: ctx.clientAddress, readOnly }), owned: true };
  };
  const sessionFor = (exp: Export, device: Device): Session => {
    const metaContexts = meta !== undefined && find(meta.exportName) === exp ? meta.ids : new Map<number, string>();
    return {
      export: exp,
      device,
      flags: transmissionFlags(device, isReadOnly(exp, device), structured, extended),
      blockSizes: blockSizesOf(device, ctx.maxPayload),
      structured,
      extended,
      metaContexts,
    };
  };

  for (let n = 0; n < MAX_OPTIONS; n++) {
    let frame: ClientFrame | null;
    frame = await src.next();
    if (frame === null || frame.kind !== 'option') return undefined;
    const { option, data } = frame;
    if (!fixed && option !== Option.EXPORT_NAME) {
      // A plain-newstyle client cannot parse option replies.
      logger.warn(`${ctx.clientAddress}: option ${option} from a non-fixed-newstyle client, closing`);
      return undefined;
    }
    if (ctx.shuttingDown() && option !== Option.ABORT) {
      if (option === Option.EXPORT_NAME) return undefined;
      error(option, OptionReply.ERR_SHUTDOWN, 'server is shutting down');
      continue;
    }
    let req;
    try {
      req = decodeOptionRequest(option, data);
    } catch (e) {
      if (option === Option.EXPORT_NAME) return undefined;
      error(option, OptionReply.ERR_INVALID, (e as Error).message);
      continue;
    }

    switch (req.kind) {
      case 'export-name': {
        // No error reply exists for EXPORT_NAME: refusing means closing.
        if (extended) {
          logger.warn(`${ctx.clientAddress}: EXPORT_NAME after EXTENDED_HEADERS, closing`);
          return undefined;
        }
        const exp = find(req.name);
        if (exp === undefined) {
          logger.info(`${ctx.clientAddress}: unknown export "${req.name}", closing`);
          return undefined;
        }
        const { device, owned } = await openDevice(exp);
        const session = sessionFor(exp, device);
        write(encodeExportNameReply({ size: BigInt(exp.size), flags: session.flags }, noZeroes));
        return { session, ownsDevice: owned };
      }

      case 'abort':
        reply(option, { kind: 'ack' });
        return undefined;

      case 'list':
        for (const e of ctx.exports) reply(option, { kind: 'server', name: e.name, description: e.description ?? '' });
        reply(option, { kind: 'ack' });
        break;

      case 'starttls':
        error(option, OptionReply.ERR_UNSUP, 'TLS is not supported by this server');
        break;

      case 'info':
      case 'go': {
        const exp = find(req.name);
        if (exp === undefined) {
          error(option, OptionReply.ERR_UNKNOWN, `unknown export "${req.name}"`);
          break;
        }
        const wantsBlockSize = req.requests.includes(Info.BLOCK_SIZE);
        const minBlock = exp.device.blockSizes?.min ?? 1;
        if (req.kind === 'go' && !wantsBlockSize && minBlock > 1) {
          error(option, OptionReply.ERR_BLOCK_SIZE_REQD, `export "${exp.name}" needs ${minBlock}-byte aligned requests`);
          break;
        }
        let opened: { device: Device; owned: boolean };
        try {
          opened = await openDevice(exp);
        } catch (e) {
          logger.warn(`${ctx.clientAddress}: open of export "${exp.name}" failed: ${(e as Error).message}`);
          error(option, OptionReply.ERR_UNKNOWN, `cannot open export "${exp.name}"`);
          break;
        }
        const session = sessionFor(exp, opened.device);
        reply(option, { kind: 'info', info: { kind: 'export', size: BigInt(exp.size), flags: session.flags } });
        if (req.requests.includes(Info.NAME)) reply(option, { kind: 'info', info: { kind: 'name', name: exp.name } });
        if (req.requests.includes(Info.DESCRIPTION) && exp.description !== undefined) {
          reply(option, { kind: 'info', info: { kind: 'description', description: exp.description } });
        }
        // Always sent: the client may use it even unrequested, and it tells our payload limit.
        reply(option, { kind: 'info', info: { kind: 'block-size', ...session.blockSizes } });
        reply(option, { kind: 'ack' });
        if (req.kind === 'go') return { session, ownsDevice: opened.owned };
        if (opened.owned) await opened.device.close?.();
        break;
      }

      case 'structured-reply':
        if (structured) {
          error(option, OptionReply.ERR_INVALID, extended ? 'extended headers already negotiated' : 'structured replies already negotiated');
          break;
        }
        structured = true;
        meta = undefined;
        reply(option, { kind: 'ack' });
        break;

      case 'extended-headers':
        if (extended) {
          error(option, OptionReply.ERR_INVALID, 'extended headers already negotiated');
          break;
        }
        extended = true;
        structured = true;
        meta = undefined;
        reply(option, { kind: 'ack' });
        break;

      case 'list-meta-context':
      case 'set-meta-context': {
        const set = req.kind === 'set-meta-context';
        if (set) meta = undefined; // SET replaces the selection, even when it fails
        if (!structured) {
          error(option, OptionReply.ERR_INVALID, 'meta contexts need structured replies');
          break;
        }
        if (find(req.name) === undefined) {
          error(option, OptionReply.ERR_UNKNOWN, `unknown export "${req.name}"`);
          break;
        }
        // base:allocation is always offered: devices without extents report all data.
        const matches = set
          ? req.queries.some((q) => q === MetaContext.BASE_ALLOCATION)
          : req.queries.length === 0 || req.queries.some((q) => q === MetaContext.BASE_ALLOCATION || q === 'base:');
        if (matches) {
          reply(option, { kind: 'meta-context', id: set ? BASE_ALLOCATION_ID : 0, name: MetaContext.BASE_ALLOCATION });
        }
        if (set) {
          meta = { exportName: req.name, ids: new Map(matches ? [[BASE_ALLOCATION_ID, MetaContext.BASE_ALLOCATION]] : []) };
        }
        reply(option, { kind: 'ack' });
        break;
      }

      case 'unknown':
      default:
        error(option, OptionReply.ERR_UNSUP, `option ${option} is not supported`);
        break;
    }
  }
  logger.warn(`${ctx.clientAddress}: more than ${MAX_OPTIONS} options, closing`);
  return undefined;
}
