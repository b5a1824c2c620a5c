// Codecs for the handshake phase: greetings, client flags, option requests and
// option replies. Pure functions over bytes; the stream decoder is in frames.ts.
import { Reader, utf8, Writer } from './bytes.js';
import { Info, Limits, Magic, OPTION_REPLY_ERROR_BIT, Option, OptionReply, Size } from './constants.js';
import { ProtocolError } from './errors.js';

// ---------------------------------------------------------------- greetings

/** What the server sends first. */
export type Greeting =
  /** `flags` is the oldstyle u32: handshake flags (always 0) high, transmission flags low. */
  | { style: 'oldstyle'; size: bigint; flags: number }
  /** `flags` are the handshake flags (`HandshakeFlag`). */
  | { style: 'newstyle'; flags: number };

/**
 * Encodes the server's greeting: newstyle is `NBDMAGIC | IHAVEOPT | u16 handshake flags` (18 bytes),
 * oldstyle is `NBDMAGIC | OLDSTYLE | u64 size | u32 flags | 124 zero bytes` (152 bytes).
 */
export function encodeGreeting(g: Greeting): Uint8Array {
  if (g.style === 'oldstyle') {
    return new Writer(Size.OLDSTYLE_GREETING).u64(Magic.NBDMAGIC).u64(Magic.OLDSTYLE).u64(g.size).u32(g.flags).zeroes(124).finish();
  }
  return new Writer(Size.NEWSTYLE_GREETING).u64(Magic.NBDMAGIC).u64(Magic.IHAVEOPT).u16(g.flags).finish();
}

/** Decodes a whole greeting (18 or 152 bytes). */
export function decodeGreeting(bytes: Uint8Array): Greeting {
  const r = new Reader(bytes, 'greeting');
  if (r.u64('magic') !== Magic.NBDMAGIC) throw new ProtocolError('greeting: bad magic, not an NBD server');
  const style = r.u64('style magic');
  if (style === Magic.IHAVEOPT) {
    const flags = r.u16('handshake flags');
    r.end();
    return { style: 'newstyle', flags };
  }
  if (style === Magic.OLDSTYLE) {
    const size = r.u64('size');
    const flags = r.u32('flags');
    r.bytesOf(124, 'padding');
    r.end();
    return { style: 'oldstyle', size, flags };
  }
  throw new ProtocolError(`greeting: unknown style magic 0x${style.toString(16)}`);
}

/** Encodes the client's 4-byte reply to a newstyle greeting: its `ClientFlag` bits (FIXED_NEWSTYLE, NO_ZEROES). */
export function encodeClientFlags(flags: number): Uint8Array {
  return new Writer(Size.CLIENT_FLAGS).u32(flags).finish();
}

/** Decodes the client flags (exactly 4 bytes) into their `ClientFlag` bits; any other length throws ProtocolError. */
export function decodeClientFlags(bytes: Uint8Array): number {
  const r = new Reader(bytes, 'client flags');
  const flags = r.u32('flags');
  r.end();
  return flags;
}

// ---------------------------------------------------------- option requests

/** An option request, by kind; `unknown` keeps options this library does not know. */
export type OptionRequest =
  | { kind: 'export-name'; name: string }
  | { kind: 'abort' }
  | { kind: 'list' }
  | { kind: 'starttls' }
  | { kind: 'info' | 'go'; name: string; requests: number[] }
  | { kind: 'structured-reply' }
  | { kind: 'list-meta-context' | 'set-meta-context'; name: string; queries: string[] }
  | { kind: 'extended-headers' }
  | { kind: 'unknown'; code: number; data: Uint8Array };

const optionCodeByKind = {
  'export-name': Option.EXPORT_NAME,
  abort: Option.ABORT,
  list: Option.LIST,
  starttls: Option.STARTTLS,
  info: Option.INFO,
  go: Option.GO,
  'structured-reply': Option.STRUCTURED_REPLY,
  'list-meta-context': Option.LIST_META_CONTEXT,
  'set-meta-context': Option.SET_META_CONTEXT,
  'extended-headers': Option.EXTENDED_HEADERS,
} as const;

/** The `NBD_OPT_*` number of a request. */
export function optionCode(req: OptionRequest): number {
  return req.kind === 'unknown' ? req.code : optionCodeByKind[req.kind];
}

/** Encodes a whole option request as the client sends it: `IHAVEOPT | u32 option | u32 length | data`. */
export function encodeOptionRequest(req: OptionRequest): Uint8Array {
  const data = encodeOptionData(req);
  return new Writer(Size.OPTION_HEADER + data.length).u64(Magic.IHAVEOPT).u32(optionCode(req)).u32(data.length).raw(data).finish();
}

function encodeOptionData(req: OptionRequest): Uint8Array {
  switch (req.kind) {
    case 'export-name':
      return utf8(req.name, 'export name');
    case 'info':
    case 'go': {
      // u32 name length | name | u16 count | count × u16 info type
      const name = utf8(req.name, 'export name');
      const w = new Writer(4 + name.length + 2 + 2 * req.requests.length);
      w.u32(name.length).raw(name).u16(req.requests.length);
      for (const t of req.requests) w.u16(t);
      return w.finish();
    }
    case 'list-meta-context':
    case 'set-meta-context': {
      // u32 name length | name | u32 count | count × (u32 length | query)
      const name = utf8(req.name, 'export name');
      const queries = req.queries.map((q) => utf8(q, 'meta context query'));
      const w = new Writer(4 + name.length + 4 + queries.reduce((n, q) => n + 4 + q.length, 0));
      w.u32(name.length).raw(name).u32(queries.length);
      for (const q of queries) w.u32(q.length).raw(q);
      return w.finish();
    }
    case 'unknown':
      return req.data;
    default:
      return new Uint8Array(0);
  }
}

/**
 * Decodes the data of an option request. A malformed payload throws
 * ProtocolError; a server answers that with `NBD_REP_ERR_INVALID` and goes on.
 */
export function decodeOptionRequest(code: number, data: Uint8Array): OptionRequest {
  const r = new Reader(data, `option ${code}`);
  switch (code) {
    case Option.EXPORT_NAME:
      return { kind: 'export-name', name: r.rest('export name') };
    case Option.ABORT:
      return { kind: 'abort' }; // the server SHOULD ignore any data
    case Option.LIST:
      r.end();
      return { kind: 'list' };
    case Option.STARTTLS:
      r.end();
      return { kind: 'starttls' };
    case Option.STRUCTURED_REPLY:
      r.end();
      return { kind: 'structured-reply' };
    case Option.EXTENDED_HEADERS:
      r.end();
      return { kind: 'extended-headers' };
    case Option.INFO:
    case Option.GO: {
      const name = r.string(r.u32('name length'), 'export name');
      const count = r.u16('info request count');
      r.need(2 * count, 'info requests');
      const requests: number[] = [];
      for (let i = 0; i < count; i++) requests.push(r.u16('info request'));
      r.end();
      return { kind: code === Option.GO ? 'go' : 'info', name, requests };
    }
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT: {
      const name = r.string(r.u32('name length'), 'export name');
      const count = r.u32('query count');
      // Each query takes at least 4 bytes, so a claimed count beyond that is a lie: check before looping.
      r.need(4 * count, 'queries');
      const queries: string[] = [];
      for (let i = 0; i < count; i++) queries.push(r.string(r.u32('query length'), 'query'));
      r.end();
      return { kind: code === Option.SET_META_CONTEXT ? 'set-meta-context' : 'list-meta-context', name, queries };
    }
    default:
      return { kind: 'unknown', code, data };
  }
}

// ----------------------------------------------------------- option replies

/** Block size constraints (`NBD_INFO_BLOCK_SIZE`): what a server advertises and enforces. */
export interface BlockSizes {
  /** Power of 2, 1..65536: offsets and lengths must be multiples of it. */
  min: number;
  /** Power of 2, at least max(min, 512): the size that performs best. */
  preferred: number;
  /** Largest payload (READ/WRITE length) accepted; 0xffffffff means no limit. */
  max: number;
}

/** The payload of `NBD_REP_INFO`, by info type. */
export type InfoReply =
  | { kind: 'export'; size: bigint; flags: number }
  | { kind: 'name'; name: string }
  | { kind: 'description'; description: string }
  | { kind: 'block-size'; min: number; preferred: number; max: number }
  | { kind: 'unknown'; code: number; data: Uint8Array };

/** An option reply, by reply type. Any type with bit 31 set is an `error`. */
export type OptionReplyMessage =
  | { kind: 'ack' }
  | { kind: 'server'; name: string; description: string }
  | { kind: 'info'; info: InfoReply }
  | { kind: 'meta-context'; id: number; name: string }
  | { kind: 'error'; code: number; message: string }
  | { kind: 'unknown'; code: number; data: Uint8Array };

/** The `NBD_REP_*` number of a reply. */
export function optionReplyCode(reply: OptionReplyMessage): number {
  switch (reply.kind) {
    case 'ack':
      return OptionReply.ACK;
    case 'server':
      return OptionReply.SERVER;
    case 'info':
      return OptionReply.INFO;
    case 'meta-context':
      return OptionReply.META_CONTEXT;
    case 'error':
    case 'unknown':
      return reply.code;
  }
}

/**
 * Encodes a whole option reply to option `option` (an `NBD_OPT_*` number):
 * `OPTION_REPLY magic | u32 option | u32 reply type | u32 length | data`.
 */
export function encodeOptionReply(option: number, reply: OptionReplyMessage): Uint8Array {
  const data = encodeOptionReplyData(reply);
  return new Writer(Size.OPTION_REPLY_HEADER + data.length)
    .u64(Magic.OPTION_REPLY)
    .u32(option)
    .u32(optionReplyCode(reply))
    .u32(data.length)
    .raw(data)
    .finish();
}

function encodeOptionReplyData(reply: OptionReplyMessage): Uint8Array {
  switch (reply.kind) {
    case 'ack':
      return new Uint8Array(0);
    case 'server': {
      // u32 name length | name | description (rest)
      const name = utf8(reply.name, 'export name');
      const description = utf8(reply.description, 'description');
      return new Writer(4 + name.length + description.length).u32(name.length).raw(name).raw(description).finish();
    }
    case 'info':
      return encodeInfo(reply.info);
    case 'meta-context': {
      // u32 context id | name (rest)
      const name = utf8(reply.name, 'meta context name');
      return new Writer(4 + name.length).u32(reply.id).raw(name).finish();
    }
    case 'error':
      return utf8(reply.message, 'error message');
    case 'unknown':
      return reply.data;
  }
}

// u16 info type | payload
function encodeInfo(info: InfoReply): Uint8Array {
  switch (info.kind) {
    case 'export': // u64 size | u16 transmission flags
      return new Writer(12).u16(Info.EXPORT).u64(info.size).u16(info.flags).finish();
    case 'name': {
      const name = utf8(info.name, 'export name');
      return new Writer(2 + name.length).u16(Info.NAME).raw(name).finish();
    }
    case 'description': {
      const d = utf8(info.description, 'description');
      return new Writer(2 + d.length).u16(Info.DESCRIPTION).raw(d).finish();
    }
    case 'block-size': // u32 minimum | u32 preferred | u32 maximum payload
      return new Writer(14).u16(Info.BLOCK_SIZE).u32(info.min).u32(info.preferred).u32(info.max).finish();
    case 'unknown':
      return new Writer(2 + info.data.length).u16(info.code).raw(info.data).finish();
  }
}

/** Decodes the data of an option reply of type `type`. Malformed data throws ProtocolError. */
export function decodeOptionReply(type: number, data: Uint8Array): OptionReplyMessage {
  const r = new Reader(data, `option reply 0x${type.toString(16)}`);
  if ((type & OPTION_REPLY_ERROR_BIT) !== 0) {
    // Servers sometimes send messages that are not UTF-8; keep what we can rather than fail the option.
    return { kind: 'error', code: type >>> 0, message: lenientString(r.bytesOf(Math.min(r.remaining, Limits.MAX_STRING), 'message')) };
  }
  switch (type) {
    case OptionReply.ACK:
      r.end();
      return { kind: 'ack' };
    case OptionReply.SERVER: {
      const name = r.string(r.u32('name length'), 'export name');
      return { kind: 'server', name, description: r.rest('description') };
    }
    case OptionReply.INFO:
      return { kind: 'info', info: decodeInfo(r) };
    case OptionReply.META_CONTEXT: {
      const id = r.u32('context id');
      return { kind: 'meta-context', id, name: r.rest('context name') };
    }
    default:
      return { kind: 'unknown', code: type, data };
  }
}

function decodeInfo(r: Reader): InfoReply {
  const code = r.u16('info type');
  switch (code) {
    case Info.EXPORT: {
      const size = r.u64('size');
      const flags = r.u16('transmission flags');
      r.end();
      return { kind: 'export', size, flags };
    }
    case Info.NAME:
      return { kind: 'name', name: r.rest('name') };
    case Info.DESCRIPTION:
      return { kind: 'description', description: r.rest('description') };
    case Info.BLOCK_SIZE: {
      const min = r.u32('minimum block size');
      const preferred = r.u32('preferred block size');
      const max = r.u32('maximum payload');
      r.end();
      return { kind: 'block-size', min, preferred, max };
    }
    default:
      return { kind: 'unknown', code, data: r.bytesOf(r.remaining, 'data') };
  }
}

const lenientDecoder = new TextDecoder('utf-8');
function lenientString(b: Uint8Array): string {
  return lenientDecoder.decode(b);
}

// ------------------------------------------------------ EXPORT_NAME reply

/** The server's answer to `NBD_OPT_EXPORT_NAME`, which moves straight to transmission. */
export interface ExportNameReply {
  /** The export's size in bytes. */
  size: bigint;
  /** Transmission flags. */
  flags: number;
}

/**
 * Encodes the `NBD_OPT_EXPORT_NAME` reply: `u64 size | u16 transmission flags` (10 bytes),
 * then 124 zero bytes unless the client set `NBD_FLAG_C_NO_ZEROES` (`noZeroes`).
 */
export function encodeExportNameReply(reply: ExportNameReply, noZeroes: boolean): Uint8Array {
  const w = new Writer(noZeroes ? Size.EXPORT_NAME_REPLY_NO_ZEROES : Size.EXPORT_NAME_REPLY);
  w.u64(reply.size).u16(reply.flags);
  if (!noZeroes) w.zeroes(124);
  return w.finish();
}

/** Decodes the `NBD_OPT_EXPORT_NAME` reply, with or without its 124 zero bytes (10 or 134 bytes). */
export function decodeExportNameReply(bytes: Uint8Array): ExportNameReply {
  const r = new Reader(bytes, 'export name reply');
  const size = r.u64('size');
  const flags = r.u16('transmission flags');
  if (r.remaining !== 0) r.bytesOf(124, 'padding');
  r.end();
  return { size, flags };
}
