// The reply assembler, without I/O: given a pending request's reply state
// (reply-state.ts) and the reply frames that answer it, it checks every rule the spec
// sets for replies and records what they bring, then says whether the request
// succeeded (its result is then read from the state, commands.ts) or failed. A rule
// broken is a ProtocolError naming the rule (the connection cannot go on); `strict:
// false` relaxes what is safe to relax, listed in the README: each relaxed rule either
// ignores the offending chunk or fails just that request, never the stream's sync,
// and never yields bytes nobody sent. Wire layouts are @nbd/protocol's codecs'.
import {
  CHUNK_ERROR_BIT,
  type ChunkHeader,
  ChunkType,
  Command,
  CommandFlag,
  decodeChunkPayload,
  Errno,
  Limits,
  NbdErrnoError,
  nameOf,
  normalizeErrno,
  ProtocolError,
  ReplyFlag,
  readErrorChunkHead,
  readOffsetData,
} from '@nbd/protocol';
import { checkDescribed, content } from './read-content.js';
import { dropSingle, type Extent, type ReplyRules, type ReplyState, type ViewHolder } from './reply-state.js';

/** A reply's end: success (the result is read from the reply state, commands.ts), or the request's error. */
export type ReplyOutcome = { ok: true } | { ok: false; error: NbdErrnoError };

const OK: ReplyOutcome = { ok: true };

/**
 * Bytes of READ data that follow a simple reply to this request: the stream decoder
 * cannot parse simple replies without it. Strict mode expects none once structured
 * replies are negotiated (a server MUST NOT answer READ with a simple reply then).
 */
export function simpleReplyPayload(rules: ReplyRules, st: ReplyState): number | undefined {
  if (st.command !== Command.READ || (rules.structured && rules.strict)) return undefined;
  return st.length;
}

/** A simple reply: always the last word on its request. */
export function assembleSimple(
  rules: ReplyRules,
  st: ReplyState,
  error: number,
  data: Uint8Array | undefined,
  views: ViewHolder,
): ReplyOutcome {
  if (rules.structured && st.command === Command.READ && rules.strict) {
    throw new ProtocolError(
      'simple reply to NBD_CMD_READ: once structured replies are negotiated, a server MUST answer READ with structured replies',
    );
  }
  if (st.chunked && rules.strict) {
    throw new ProtocolError(
      `simple reply to ${commandName(st.command)} after chunks of a structured reply to it (the spec: a structured reply ends with its chunk flagged NBD_REPLY_FLAG_DONE)`,
    );
  }
  if (error !== 0) {
    st.error = errnoError(rules, error, '');
    return finish(rules, st, views);
  }
  if (st.command === Command.READ && data !== undefined) content(rules, st, st.offset, data, data.length, views);
  if (st.command === Command.BLOCK_STATUS) {
    if (rules.strict)
      throw new ProtocolError('simple reply to NBD_CMD_BLOCK_STATUS: a successful reply MUST carry one status chunk per context');
    return { ok: false, error: new NbdErrnoError(Errno.EIO, 'block status reply without any status chunk') };
  }
  return finish(rules, st, views);
}

/** One structured or extended chunk: undefined while more are due, the outcome once DONE is seen. */
export function assembleChunk(
  rules: ReplyRules,
  st: ReplyState,
  h: ChunkHeader,
  payload: Uint8Array,
  views: ViewHolder,
): ReplyOutcome | undefined {
  if (!rules.structured && rules.strict) {
    throw new ProtocolError('structured reply chunk received, but structured replies were not negotiated (the server MUST NOT send them)');
  }
  st.chunked = true;
  if (h.offset !== undefined && rules.strict && h.offset !== BigInt(st.offset)) {
    throw new ProtocolError(`extended reply chunk: offset ${h.offset} does not match the request's ${st.offset} (the spec: it MUST match)`);
  }
  const type = h.type;
  if (type === ChunkType.OFFSET_DATA || type === ChunkType.OFFSET_HOLE) contentChunk(rules, st, type, payload, views);
  else if (type === ChunkType.BLOCK_STATUS || type === ChunkType.BLOCK_STATUS_EXT) statusChunk(rules, st, type, payload);
  else if ((type & CHUNK_ERROR_BIT) !== 0) errorChunk(rules, st, type, payload);
  else if (type === ChunkType.NONE) {
    decodeChunkPayload(type, payload); // length 0, or a ProtocolError
    if ((h.flags & ReplyFlag.DONE) === 0 && rules.strict)
      throw new ProtocolError('NONE chunk without the DONE flag (the spec: NONE MUST always be the final chunk)');
  } else {
    throw new ProtocolError(
      `unknown reply chunk type 0x${type.toString(16)} (a client MUST hard-disconnect on unknown non-error chunk types)`,
    );
  }
  return (h.flags & ReplyFlag.DONE) !== 0 ? finish(rules, st, views) : undefined;
}

function commandName(command: number): string {
  return `NBD_CMD_${nameOf(Command, command)}`;
}

/** A chunk that is valid, just not for this command: fatal in strict mode, ignored otherwise. */
function unexpected(rules: ReplyRules, what: string): void {
  if (rules.strict) throw new ProtocolError(`${what} (the spec: a client MUST hard-disconnect on unexpected chunk types)`);
}

function contentChunk(rules: ReplyRules, st: ReplyState, type: number, payload: Uint8Array, views: ViewHolder): void {
  if (st.command !== Command.READ) {
    unexpected(rules, `${type === ChunkType.OFFSET_DATA ? 'OFFSET_DATA' : 'OFFSET_HOLE'} chunk in reply to ${commandName(st.command)}`);
    return;
  }
  // OFFSET_DATA read in place: this is the one chunk of every bulk read.
  const inPlace = type === ChunkType.OFFSET_DATA ? readOffsetData(payload) : undefined;
  if (inPlace !== undefined) {
    content(rules, st, inPlace.offset, inPlace.data, inPlace.data.length, views);
    return;
  }
  const c = decodeChunkPayload(type, payload); // holes, and the length errors of a short OFFSET_DATA
  if (c.kind === 'offset-hole') content(rules, st, safeOffset(c.offset), undefined, c.size, views);
}

function safeOffset(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`chunk offset ${v} is beyond 2^53`);
  return Number(v);
}

function statusChunk(rules: ReplyRules, st: ReplyState, type: number, payload: Uint8Array): void {
  if (st.command !== Command.BLOCK_STATUS) {
    unexpected(
      rules,
      `${type === ChunkType.BLOCK_STATUS ? 'BLOCK_STATUS' : 'BLOCK_STATUS_EXT'} chunk in reply to ${commandName(st.command)}`,
    );
    return;
  }
  if ((type === ChunkType.BLOCK_STATUS_EXT) !== rules.extended && rules.strict) {
    throw new ProtocolError(
      rules.extended
        ? 'BLOCK_STATUS chunk after extended headers were negotiated (the spec: only BLOCK_STATUS_EXT then)'
        : 'BLOCK_STATUS_EXT chunk without extended headers (the spec: MUST NOT be used unless negotiated)',
    );
  }
  const c = decodeChunkPayload(type, payload);
  if (c.kind !== 'block-status' && c.kind !== 'block-status-ext') return;
  const id = c.contextId;
  if (!st.contextIds.includes(id)) {
    if (rules.strict) throw new ProtocolError(`block status chunk for context id ${id}, which the request did not ask about`);
    return;
  }
  if (st.extents.has(id)) {
    if (rules.strict) throw new ProtocolError(`a second block status chunk for context id ${id} (the spec: exactly one per context)`);
    return;
  }
  const n = c.extents.length;
  if (rules.strict && (st.flags & CommandFlag.REQ_ONE) !== 0 && (n !== 1 || c.extents[0]!.length > BigInt(st.length))) {
    throw new ProtocolError(
      `block status with REQ_ONE: ${n} extents, ${c.extents[0]!.length} bytes (the spec: exactly one, no longer than the request's ${st.length})`,
    );
  }
  const list: Extent[] = [];
  let off = st.offset;
  for (let i = 0; i < n; i++) {
    const e = c.extents[i]!;
    if (e.length === 0n) throw new ProtocolError('block status extent of length 0 (the spec: extent lengths MUST be nonzero)');
    if (rules.strict && i === n - 1 && n > 1 && off - st.offset >= st.length) {
      throw new ProtocolError(
        `block status: the first ${n - 1} extents already cover ${off - st.offset} bytes of the ${st.length} asked (the spec: their sum MUST be less)`,
      );
    }
    if (e.length > BigInt(Number.MAX_SAFE_INTEGER - off))
      throw new ProtocolError(`block status extent ${off}+${e.length} ends beyond 2^53`);
    const len = Number(e.length);
    list.push({ offset: off, length: len, flags: e.flags });
    off += len;
  }
  st.extents.set(id, list);
}

/** Commands ERROR_OFFSET is valid for (for others it still marks the reply as errored). */
const ERROR_OFFSET_COMMANDS = new Set<number>([
  Command.READ,
  Command.WRITE,
  Command.TRIM,
  Command.CACHE,
  Command.WRITE_ZEROES,
  Command.BLOCK_STATUS,
]);

function errorChunk(rules: ReplyRules, st: ReplyState, type: number, payload: Uint8Array): void {
  const head = readErrorChunkHead(type, payload);
  if (rules.strict && head.messageLength > Limits.MAX_STRING) {
    throw new ProtocolError(
      `error chunk with a message of ${head.messageLength} bytes (the spec: message length MUST NOT exceed the 4096-byte string limit)`,
    );
  }
  if (type !== ChunkType.ERROR && type !== ChunkType.ERROR_OFFSET) {
    // An error chunk type we do not know: the request failed; the stream goes on, its lengths being sane.
    st.error ??= errnoError(rules, head.error, `unknown error chunk type 0x${type.toString(16)}`);
    return;
  }
  const c = decodeChunkPayload(type, payload);
  if (c.kind !== 'error' && c.kind !== 'error-offset') return;
  let offset: number | undefined;
  if (c.kind === 'error-offset') {
    offset = safeOffset(c.offset);
    if (rules.strict && ERROR_OFFSET_COMMANDS.has(st.command) && (offset < st.offset || offset >= st.offset + st.length)) {
      throw new ProtocolError(`ERROR_OFFSET at ${offset}, outside the request ${st.offset}+${st.length} (the spec: it MUST lie within)`);
    }
  }
  const where = offset !== undefined ? ` (at offset ${offset})` : '';
  st.error ??= errnoError(rules, c.error, c.message + where, offset);
}

/** The request's error for an errno from the wire; an unknown value reads as EINVAL, 0 breaks a MUST. */
function errnoError(rules: ReplyRules, errno: number, message: string, offset?: number): NbdErrnoError {
  if (errno === 0 && rules.strict) throw new ProtocolError('error reply with error value 0 (the spec: it MUST be nonzero)');
  return new NbdErrnoError(normalizeErrno(errno), message || undefined, { offset });
}

/** The reply is complete: check what the request needed, and produce its outcome. */
function finish(rules: ReplyRules, st: ReplyState, views: ViewHolder): ReplyOutcome {
  if (st.command === Command.READ && st.error === undefined) checkDescribed(rules, st);
  if (st.command === Command.BLOCK_STATUS && st.error === undefined) {
    const missing = st.contextIds.filter((id) => !st.extents.has(id));
    if (missing.length > 0 && rules.strict) {
      throw new ProtocolError(
        `block status reply done without a status chunk for context id ${missing.join(', ')} (the spec: exactly one per context)`,
      );
    }
    if (missing.length === st.contextIds.length) st.error = new NbdErrnoError(Errno.EIO, 'block status reply without any status chunk');
    else for (const id of missing) st.extents.set(id, []);
  }
  if (st.error === undefined) return OK;
  if (st.command === Command.READ) dropSingle(st, views);
  return { ok: false, error: st.error };
}
