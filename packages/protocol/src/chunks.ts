// Codecs for reply chunks (structured and extended): headers, payloads by chunk
// type, and the writer of READ replies filled in place. Pure functions over bytes.
import { Reader, utf8, Writer } from './bytes.js';
import { ChunkType, Magic, ReplyFlag, Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { writeSimpleReply } from './transmission.js';

/** The header of one reply chunk: structured (`NBD_REPLY_TYPE_*` after structured replies) or extended. */
export interface ChunkHeader {
  /** Reply flags (`ReplyFlag`). */
  flags: number;
  /** Chunk type (`ChunkType`). */
  type: number;
  /** The cookie of the request this chunk answers. */
  cookie: bigint;
  /** Extended chunks only: the offset of the request this chunk answers. */
  offset?: bigint;
  /** Payload length in bytes. */
  length: number;
}

/**
 * Writes a chunk header at `pos` of `buf`; returns the header size.
 * structured: u32 STRUCTURED_REPLY magic | u16 flags | u16 type | u64 cookie | u32 length
 * extended:   u32 EXTENDED_REPLY magic | u16 flags | u16 type | u64 cookie | u64 offset | u64 length
 */
export function writeChunkHeader(buf: Uint8Array, pos: number, h: ChunkHeader, extended: boolean): number {
  const v = new DataView(buf.buffer, buf.byteOffset + pos, extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK);
  v.setUint32(0, extended ? Magic.EXTENDED_REPLY : Magic.STRUCTURED_REPLY);
  v.setUint16(4, h.flags);
  v.setUint16(6, h.type);
  v.setBigUint64(8, h.cookie);
  if (extended) {
    v.setBigUint64(16, h.offset ?? 0n);
    v.setBigUint64(24, BigInt(h.length));
    return Size.EXTENDED_CHUNK;
  }
  v.setUint32(16, h.length);
  return Size.STRUCTURED_CHUNK;
}

/**
 * Reads the reply chunk header at `pos` of `bytes` (which must hold all of it): the
 * one chunk-header reader. The magic must be the one `extended` calls for.
 * structured: u32 magic | u16 flags | u16 type | u64 cookie | u32 length
 * extended:   u32 magic | u16 flags | u16 type | u64 cookie | u64 offset | u64 length
 */
export function readChunkHeader(bytes: Uint8Array, pos: number, extended: boolean): ChunkHeader {
  const v = new DataView(bytes.buffer, bytes.byteOffset + pos, extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK);
  const magic = v.getUint32(0);
  const expected = extended ? Magic.EXTENDED_REPLY : Magic.STRUCTURED_REPLY;
  if (magic !== expected) throw new ProtocolError(`reply chunk: bad magic 0x${magic.toString(16)} (expected 0x${expected.toString(16)})`);
  const flags = v.getUint16(4);
  const type = v.getUint16(6);
  const cookie = v.getBigUint64(8);
  if (!extended) return { flags, type, cookie, length: v.getUint32(16) };
  const length = v.getBigUint64(24);
  if (length > 0xffffffffn) throw new ProtocolError(`reply chunk: length ${length} is beyond any payload limit`);
  return { flags, type, cookie, offset: v.getBigUint64(16), length: Number(length) };
}

/** Decodes a whole chunk header (20 bytes structured, 32 extended; the magic tells which). */
export function decodeChunkHeader(bytes: Uint8Array): ChunkHeader & { extended: boolean } {
  if (bytes.length < 4) throw new ProtocolError('reply chunk: truncated at magic');
  const magic = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  const extended = magic === Magic.EXTENDED_REPLY;
  if (!extended && magic !== Magic.STRUCTURED_REPLY) throw new ProtocolError(`reply chunk: bad magic 0x${magic.toString(16)}`);
  const size = extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
  if (bytes.length < size) throw new ProtocolError(`reply chunk: truncated header (need ${size} bytes, have ${bytes.length})`);
  if (bytes.length > size) throw new ProtocolError(`reply chunk: ${bytes.length - size} unexpected trailing bytes`);
  return { extended, ...readChunkHeader(bytes, 0, extended) };
}

/** One block descriptor of a block status reply: `length` bytes with the context's `flags`. */
export interface BlockDescriptor {
  /** Bytes this descriptor covers, from where the previous one ended (u32 on the wire, u64 in `BLOCK_STATUS_EXT`). */
  length: bigint;
  /** Status bits of the meta context (for `base:allocation`: `NBD_STATE_HOLE` 1, `NBD_STATE_ZERO` 2). */
  flags: number;
}

/** A chunk's payload, by chunk type. */
export type ChunkPayload =
  | { kind: 'none' }
  | { kind: 'offset-data'; offset: bigint; data: Uint8Array }
  | { kind: 'offset-hole'; offset: bigint; size: number }
  | { kind: 'block-status'; contextId: number; extents: BlockDescriptor[] }
  | { kind: 'block-status-ext'; contextId: number; extents: BlockDescriptor[] }
  | { kind: 'error'; error: number; message: string }
  | { kind: 'error-offset'; error: number; message: string; offset: bigint }
  | { kind: 'unknown'; code: number; data: Uint8Array };

const chunkTypeByKind = {
  none: ChunkType.NONE,
  'offset-data': ChunkType.OFFSET_DATA,
  'offset-hole': ChunkType.OFFSET_HOLE,
  'block-status': ChunkType.BLOCK_STATUS,
  'block-status-ext': ChunkType.BLOCK_STATUS_EXT,
  error: ChunkType.ERROR,
  'error-offset': ChunkType.ERROR_OFFSET,
} as const;

/** The `NBD_REPLY_TYPE_*` number of a chunk payload (an unknown payload keeps its own code). */
export function chunkTypeOf(p: ChunkPayload): number {
  return p.kind === 'unknown' ? p.code : chunkTypeByKind[p.kind];
}

/** Payload bytes of `p`; error messages come back encoded, to be written as they are. */
function payloadSize(p: ChunkPayload, message: Uint8Array | undefined): number {
  switch (p.kind) {
    case 'none':
      return 0;
    case 'offset-data':
      return 8 + p.data.length;
    case 'offset-hole':
      return 12;
    case 'block-status':
      return 4 + 8 * p.extents.length;
    case 'block-status-ext':
      return 8 + 16 * p.extents.length;
    case 'error':
      return 6 + message!.length;
    case 'error-offset':
      return 14 + message!.length;
    case 'unknown':
      return p.data.length;
  }
}

function writePayload(w: Writer, p: ChunkPayload, message: Uint8Array | undefined): void {
  switch (p.kind) {
    case 'none':
      return;
    case 'offset-data': // u64 offset | data
      w.u64(p.offset).raw(p.data);
      return;
    case 'offset-hole': // u64 offset | u32 hole size
      w.u64(p.offset).u32(p.size);
      return;
    case 'block-status': // u32 context id | n × (u32 length | u32 flags)
      w.u32(p.contextId);
      for (const e of p.extents) {
        if (e.length > 0xffffffffn) throw new RangeError(`extent length ${e.length} needs BLOCK_STATUS_EXT`);
        w.u32(Number(e.length)).u32(e.flags);
      }
      return;
    case 'block-status-ext': // u32 context id | u32 count | n × (u64 length | u64 flags)
      w.u32(p.contextId).u32(p.extents.length);
      for (const e of p.extents) w.u64(e.length).u64(BigInt(e.flags));
      return;
    case 'error': // u32 error | u16 message length | message
      w.u32(p.error).u16(message!.length).raw(message!);
      return;
    case 'error-offset': // u32 error | u16 message length | message | u64 offset
      w.u32(p.error).u16(message!.length).raw(message!).u64(p.offset);
      return;
    case 'unknown':
      w.raw(p.data);
      return;
  }
}

const messageOf = (p: ChunkPayload) => (p.kind === 'error' || p.kind === 'error-offset' ? utf8(p.message, 'error message') : undefined);

/** Encodes a payload without its header. */
export function encodeChunkPayload(p: ChunkPayload): Uint8Array {
  const message = messageOf(p);
  const w = new Writer(payloadSize(p, message));
  writePayload(w, p, message);
  return w.finish();
}

/**
 * A whole chunk (header and payload) in one buffer: the writer of every reply
 * chunk but bulk READ data (see `writeReadReplyHead`). `offset` is the request's
 * offset, echoed by extended chunks. `done` defaults to true.
 */
export function encodeChunk(
  cookie: bigint,
  payload: ChunkPayload,
  opts: { done?: boolean; extended?: boolean; offset?: bigint } = {},
): Uint8Array {
  const message = messageOf(payload);
  const length = payloadSize(payload, message);
  const extended = opts.extended ?? false;
  const w = new Writer((extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK) + length);
  const flags = opts.done === false ? 0 : ReplyFlag.DONE;
  w.pos = writeChunkHeader(w.bytes, 0, { flags, type: chunkTypeOf(payload), cookie, offset: opts.offset ?? 0n, length }, extended);
  writePayload(w, payload, message);
  return w.finish();
}

/** Bytes in front of READ data in a reply: a simple reply header, or an OFFSET_DATA chunk header and its offset. */
export function readReplyHeadSize(structured: boolean, extended: boolean): number {
  if (extended) return Size.EXTENDED_CHUNK + 8;
  return structured ? Size.STRUCTURED_CHUNK + 8 : Size.SIMPLE_REPLY;
}

/**
 * Writes, at `pos` of `buf`, what goes in front of `length` bytes of READ data: a
 * simple reply header, or an OFFSET_DATA chunk header and the data's offset. The
 * data follows at `pos + readReplyHeadSize(...)`, so a reply leaves in one buffer
 * filled in place. `offset` is the request's (echoed by extended headers);
 * `dataOffset` where these bytes start (default: the request's offset); `done`
 * marks the final chunk (default true).
 */
export function writeReadReplyHead(
  buf: Uint8Array,
  pos: number,
  r: { cookie: bigint; offset: bigint; length: number; structured: boolean; extended: boolean; dataOffset?: bigint; done?: boolean },
): number {
  if (!r.structured && !r.extended) return writeSimpleReply(buf, pos, { error: 0, cookie: r.cookie });
  const flags = r.done === false ? 0 : ReplyFlag.DONE;
  const n = writeChunkHeader(
    buf,
    pos,
    { flags, type: ChunkType.OFFSET_DATA, cookie: r.cookie, offset: r.offset, length: 8 + r.length },
    r.extended,
  );
  new DataView(buf.buffer, buf.byteOffset + pos + n, 8).setBigUint64(0, r.dataOffset ?? r.offset);
  return n + 8;
}

/**
 * Decodes a chunk payload, checking every length rule of the spec.
 * Inconsistent lengths are a ProtocolError (the client must hard-disconnect).
 */
export function decodeChunkPayload(type: number, payload: Uint8Array): ChunkPayload {
  const r = new Reader(payload, `chunk type 0x${type.toString(16)}`);
  switch (type) {
    case ChunkType.NONE:
      r.end();
      return { kind: 'none' };
    case ChunkType.OFFSET_DATA: {
      const offset = r.u64('offset');
      if (r.remaining === 0) throw new ProtocolError('OFFSET_DATA chunk carries no data');
      return { kind: 'offset-data', offset, data: r.bytesOf(r.remaining, 'data') };
    }
    case ChunkType.OFFSET_HOLE: {
      const offset = r.u64('offset');
      const size = r.u32('hole size');
      r.end();
      if (size === 0) throw new ProtocolError('OFFSET_HOLE chunk with a zero size');
      return { kind: 'offset-hole', offset, size };
    }
    case ChunkType.BLOCK_STATUS: {
      const contextId = r.u32('context id');
      if (r.remaining === 0 || r.remaining % 8 !== 0) {
        throw new ProtocolError(`BLOCK_STATUS chunk: ${r.remaining} bytes of extents is not a positive multiple of 8`);
      }
      const extents: BlockDescriptor[] = [];
      while (r.remaining > 0) {
        const length = r.u32('extent length');
        extents.push({ length: BigInt(length), flags: r.u32('extent flags') });
      }
      return { kind: 'block-status', contextId, extents };
    }
    case ChunkType.BLOCK_STATUS_EXT: {
      const contextId = r.u32('context id');
      const count = r.u32('extent count');
      if (count === 0 || r.remaining !== count * 16) {
        throw new ProtocolError(`BLOCK_STATUS_EXT chunk: count ${count} does not match ${r.remaining} bytes`);
      }
      const extents: BlockDescriptor[] = [];
      for (let i = 0; i < count; i++) {
        const length = r.u64('extent length');
        const flags = r.u64('extent flags');
        if (flags > 0xffffffffn) throw new ProtocolError(`BLOCK_STATUS_EXT chunk: status ${flags} exceeds 32 bits`);
        extents.push({ length, flags: Number(flags) });
      }
      return { kind: 'block-status-ext', contextId, extents };
    }
    case ChunkType.ERROR:
    case ChunkType.ERROR_OFFSET: {
      const error = r.u32('error');
      const len = r.u16('message length');
      const message = lenient(r.bytesOf(len, 'message'));
      if (type === ChunkType.ERROR) {
        r.end();
        return { kind: 'error', error, message };
      }
      const offset = r.u64('offset');
      r.end();
      return { kind: 'error-offset', error, message, offset };
    }
    default:
      return { kind: 'unknown', code: type, data: payload };
  }
}

/** Bytes in front of an OFFSET_DATA chunk's data: its u64 offset. */
const OFFSET_DATA_HEAD = 8;

/**
 * OFFSET_DATA read in place, for the bulk path where `decodeChunkPayload`'s bigint and
 * object cost too much: the data's offset as a number, and the data as a view into
 * `payload` (no copy). Undefined when the payload carries no data (`decodeChunkPayload`
 * then names the fault). An offset beyond 2^53 is a ProtocolError.
 * u64 offset | data
 */
export function readOffsetData(payload: Uint8Array): { offset: number; data: Uint8Array } | undefined {
  if (payload.length <= OFFSET_DATA_HEAD) return undefined;
  // By hand, not through a DataView: this runs once per READ reply, and a DataView costs an allocation.
  const p = payload;
  const hi = ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
  const lo = ((p[4]! << 24) | (p[5]! << 16) | (p[6]! << 8) | p[7]!) >>> 0;
  if (hi >= 0x200000) throw new ProtocolError(`READ chunk offset ${(BigInt(hi) << 32n) | BigInt(lo)} is beyond 2^53`);
  return { offset: hi * 0x100000000 + lo, data: payload.subarray(OFFSET_DATA_HEAD) };
}

/** u32 error | u16 message length: what every error chunk starts with, whatever its type. */
const ERROR_CHUNK_HEAD = 6;

/** The head of an error chunk, decoded. */
export interface ErrorChunkHead {
  /** The errno value as sent (0 breaks a MUST; unknown values are the reader's to map). */
  error: number;
  /** Bytes of the message that follows (the spec allows at most 4096). */
  messageLength: number;
}

/**
 * The head of an error chunk of any type, known or not: the spec has every error
 * type start with u32 error | u16 message length | message, so a reader can fail the
 * request on a type it does not know, and check a message's length before decoding it.
 * A payload shorter than the head, or than the message it announces, is a ProtocolError.
 */
export function readErrorChunkHead(type: number, payload: Uint8Array): ErrorChunkHead {
  const what = `error chunk type 0x${type.toString(16)}`;
  if (payload.length < ERROR_CHUNK_HEAD) throw new ProtocolError(`${what} of ${payload.length} bytes (error chunks start with 6)`);
  const v = new DataView(payload.buffer, payload.byteOffset, ERROR_CHUNK_HEAD);
  const messageLength = v.getUint16(4);
  if (messageLength > payload.length - ERROR_CHUNK_HEAD)
    throw new ProtocolError(`${what}: message length ${messageLength} exceeds the chunk`);
  return { error: v.getUint32(0), messageLength };
}

const lenientDecoder = new TextDecoder('utf-8');
function lenient(b: Uint8Array): string {
  return lenientDecoder.decode(b);
}
