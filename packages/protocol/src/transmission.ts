// Codecs for the transmission phase: requests, simple replies, structured and
// extended reply chunks. Pure functions over bytes; the stream decoder is in frames.ts.
import { Reader, Writer } from './bytes.js';
import { Command, CommandFlag, Magic, Size } from './constants.js';
import { ProtocolError } from './errors.js';

// ------------------------------------------------------------------ requests

/** A transmission-phase request header (`NBD_CMD_*`), compact or extended; payload bytes are not part of it. */
export interface Request {
  /** Command flags (`CommandFlag`). */
  flags: number;
  /** Command type (`Command`). */
  type: number;
  /** Opaque; echoed in the reply. */
  cookie: bigint;
  /** Byte offset into the export (for `NBD_CMD_RESIZE`, the new size). */
  offset: bigint;
  /** u32 in compact requests, u64 in extended ones. */
  length: bigint;
}

/**
 * Writes a request header at `pos` of `buf` and returns the header size.
 * compact:  u32 REQUEST magic | u16 flags | u16 type | u64 cookie | u64 offset | u32 length
 * extended: u32 EXTENDED_REQUEST magic | u16 flags | u16 type | u64 cookie | u64 offset | u64 length
 */
export function writeRequest(buf: Uint8Array, pos: number, req: Request, extended: boolean): number {
  const v = new DataView(buf.buffer, buf.byteOffset + pos, extended ? Size.EXTENDED_REQUEST : Size.REQUEST);
  v.setUint32(0, extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST);
  v.setUint16(4, req.flags);
  v.setUint16(6, req.type);
  v.setBigUint64(8, req.cookie);
  v.setBigUint64(16, req.offset);
  if (extended) {
    v.setBigUint64(24, req.length);
    return Size.EXTENDED_REQUEST;
  }
  if (req.length > 0xffffffffn) throw new RangeError(`request length ${req.length} needs extended headers`);
  v.setUint32(24, Number(req.length));
  return Size.REQUEST;
}

/** Encodes a request header into a new buffer (28 bytes compact, 32 with `extended` headers); see {@link writeRequest}. */
export function encodeRequest(req: Request, extended = false): Uint8Array {
  const buf = new Uint8Array(extended ? Size.EXTENDED_REQUEST : Size.REQUEST);
  writeRequest(buf, 0, req, extended);
  return buf;
}

/**
 * Reads the request header at `pos` of `bytes` (which must hold all of it): the one
 * request-header reader, used by `decodeRequest` and the stream decoder alike.
 * The magic must be the one `extended` calls for.
 */
export function readRequestHeader(bytes: Uint8Array, pos: number, extended: boolean): Request {
  const v = new DataView(bytes.buffer, bytes.byteOffset + pos, extended ? Size.EXTENDED_REQUEST : Size.REQUEST);
  const magic = v.getUint32(0);
  const expected = extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST;
  if (magic !== expected) {
    throw new ProtocolError(`request: bad magic 0x${magic.toString(16)} (expected 0x${expected.toString(16)})`);
  }
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getBigUint64(16),
    length: extended ? v.getBigUint64(24) : BigInt(v.getUint32(24)),
  };
}

/**
 * Bytes of payload that follow a request header: a compact WRITE carries `length`
 * bytes; under extended headers, a request with PAYLOAD_LEN carries `length` bytes,
 * and so does a WRITE without it (qemu 10 sends those; see docs/interop.md).
 * Compared as a number: exact below 2^53, and anything larger still exceeds every limit.
 */
export function requestPayloadLength(req: Request, extended: boolean): number {
  if (req.type === Command.WRITE) return Number(req.length);
  return extended && (req.flags & CommandFlag.PAYLOAD_LEN) !== 0 ? Number(req.length) : 0;
}

/** Decodes a whole request header (28 bytes compact, 32 extended; the magic tells which). */
export function decodeRequest(bytes: Uint8Array): Request & { extended: boolean } {
  if (bytes.length < 4) throw new ProtocolError('request: truncated magic');
  const magic = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  const extended = magic === Magic.EXTENDED_REQUEST;
  if (!extended && magic !== Magic.REQUEST) throw new ProtocolError(`request: bad magic 0x${magic.toString(16)}`);
  const size = extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
  if (bytes.length !== size) throw new ProtocolError(`request: expected ${size} bytes, got ${bytes.length}`);
  return { extended, ...readRequestHeader(bytes, 0, extended) };
}

/**
 * The payload of an extended-headers `NBD_CMD_BLOCK_STATUS` sent with `NBD_CMD_FLAG_PAYLOAD_LEN`
 * (`u64 effect length | n × u32 context id`): the request's own length is then this payload's size.
 */
export interface BlockStatusPayload {
  /** Bytes to report on, from the request's offset (what the length field says without PAYLOAD_LEN). */
  effectLength: bigint;
  /** The negotiated meta context ids to report, a subset of those selected by `NBD_OPT_SET_META_CONTEXT`. */
  contextIds: number[];
}

/** Encodes a {@link BlockStatusPayload} (8 + 4 × ids bytes). */
export function encodeBlockStatusPayload(p: BlockStatusPayload): Uint8Array {
  const w = new Writer(8 + 4 * p.contextIds.length).u64(p.effectLength);
  for (const id of p.contextIds) w.u32(id);
  return w.finish();
}

/** Decodes a {@link BlockStatusPayload}; a length below 8 or not a multiple of 4 throws ProtocolError. */
export function decodeBlockStatusPayload(bytes: Uint8Array): BlockStatusPayload {
  if (bytes.length < 8 || bytes.length % 4 !== 0) {
    throw new ProtocolError(`block status payload: bad length ${bytes.length}`);
  }
  const r = new Reader(bytes, 'block status payload');
  const effectLength = r.u64('effect length');
  const contextIds: number[] = [];
  while (r.remaining > 0) contextIds.push(r.u32('context id'));
  return { effectLength, contextIds };
}

// ------------------------------------------------------------- simple reply

/** A simple reply header (the only reply form unless structured replies or extended headers were negotiated). */
export interface SimpleReply {
  /** 0 for success, else an errno (`Errno`). */
  error: number;
  /** The cookie of the request it answers. */
  cookie: bigint;
}

/**
 * Writes a simple reply header (`SIMPLE_REPLY magic | u32 error | u64 cookie`, 16 bytes) at `pos`
 * of `buf` and returns its size; a successful READ's data follows it.
 */
export function writeSimpleReply(buf: Uint8Array, pos: number, reply: SimpleReply): number {
  const v = new DataView(buf.buffer, buf.byteOffset + pos, Size.SIMPLE_REPLY);
  v.setUint32(0, Magic.SIMPLE_REPLY);
  v.setUint32(4, reply.error);
  v.setBigUint64(8, reply.cookie);
  return Size.SIMPLE_REPLY;
}

/** Encodes a simple reply header into a new 16-byte buffer. */
export function encodeSimpleReply(reply: SimpleReply): Uint8Array {
  const buf = new Uint8Array(Size.SIMPLE_REPLY);
  writeSimpleReply(buf, 0, reply);
  return buf;
}

/** Decodes a whole simple reply header (exactly 16 bytes); a bad magic or length throws ProtocolError. */
export function decodeSimpleReply(bytes: Uint8Array): SimpleReply {
  const r = new Reader(bytes, 'simple reply');
  const magic = r.u32('magic');
  if (magic !== Magic.SIMPLE_REPLY) throw new ProtocolError(`simple reply: bad magic 0x${magic.toString(16)}`);
  const error = r.u32('error');
  const cookie = r.u64('cookie');
  r.end();
  return { error, cookie };
}
