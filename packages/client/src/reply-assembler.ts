// The reply assembler, without I/O: given a pending request and the reply frames
// that answer it, it checks every rule the spec sets for replies and produces the
// result or the error. A rule broken is a ProtocolError naming the rule (the
// connection cannot go on); `strict: false` relaxes what is safe to relax, listed
// in the README: each relaxed rule either ignores the offending chunk or fails just
// that request, never the stream's sync, and never yields bytes nobody sent.
import {
  CHUNK_ERROR_BIT,
  type ChunkHeader,
  ChunkType,
  Command,
  CommandFlag,
  decodeChunkPayload,
  Errno,
  NbdErrnoError,
  nameOf,
  normalizeErrno,
  ProtocolError,
  ReplyFlag,
} from '@nbd/protocol';
import { ReadCoverage } from './read-coverage.js';

/** One run of a block status reply: `length` bytes from `offset` with the context's `flags`. */
export interface Extent {
  /** Where the run starts, in bytes from the start of the export. */
  offset: number;
  /** Bytes in the run. */
  length: number;
  /** The meta context's status bits: for `base:allocation`, `AllocationState.HOLE` (1) and `ZERO` (2); 0 is allocated data. */
  flags: number;
}

/** What the handshake fixed for every reply on a connection. */
export interface ReplyRules {
  structured: boolean;
  extended: boolean;
  /** Check every MUST of the spec about replies (default); false relaxes the safe ones. */
  strict: boolean;
}

/** Arena bookkeeping for a view kept past the frame that brought it (else its bytes may be reused). */
export interface ViewHolder {
  hold(view: Uint8Array): void;
  release(view: Uint8Array): void;
}

/** The reply one request waits for, and what it has brought so far. */
export interface ReplyState {
  readonly command: number;
  readonly offset: number;
  /** READ: bytes asked for. BLOCK_STATUS: the status length asked for. */
  readonly length: number;
  /** Command flags sent (REQ_ONE matters here). */
  readonly flags: number;
  /** READ: where the data goes; undefined until needed (a whole-range chunk is kept as a view instead). */
  dest: Uint8Array | undefined;
  destPos: number;
  /** `dest` is the caller's (readInto): the result is the filled buffer, not a value. */
  readonly intoCaller: boolean;
  /** READ: the one chunk covering the whole range, held in its arena until handed on. */
  single: Uint8Array | undefined;
  /** READ: the one chunk so far covered the whole request (the usual reply: no ReadCoverage needed). */
  whole: boolean;
  /** READ: what a reply in several chunks has described. */
  coverage: ReadCoverage | undefined;
  /** READ: bytes hole chunks described (zeroes cost work but no bytes on the wire, so they are bounded). */
  holeBytes: number;
  /** BLOCK_STATUS: context ids asked about, and the extents each got. */
  readonly contextIds: readonly number[];
  extents: Map<number, Extent[]> | undefined;
  /** The first error the reply reported. */
  error: NbdErrnoError | undefined;
  /** A structured or extended chunk came for this request (so only a DONE chunk may end it). */
  chunked: boolean;
  /** The caller gave up: chunks are still checked, never stored. */
  abandoned: boolean;
}

/** A reply's end: the value (a READ's bytes, block status by context id, or nothing), or the request's error. */
export type ReplyOutcome =
  | { ok: true; value: Uint8Array | Map<number, Extent[]> | undefined; held?: Uint8Array }
  | { ok: false; error: NbdErrnoError };

/** A fresh reply state for a request; `dest` is the caller's buffer of a readInto. */
export function newReply(req: {
  command: number;
  offset: number;
  length: number;
  flags?: number;
  dest?: Uint8Array;
  destPos?: number;
  contextIds?: readonly number[];
}): ReplyState {
  return {
    command: req.command,
    offset: req.offset,
    length: req.length,
    flags: req.flags ?? 0,
    dest: req.dest,
    destPos: req.destPos ?? 0,
    intoCaller: req.dest !== undefined,
    single: undefined,
    whole: false,
    coverage: undefined,
    holeBytes: 0,
    contextIds: req.contextIds ?? [],
    extents: req.command === Command.BLOCK_STATUS ? new Map() : undefined,
    error: undefined,
    chunked: false,
    abandoned: false,
  };
}

/** The caller gave up: nothing is stored or written into its buffer from now on; a held view goes back. */
export function abandonReply(st: ReplyState, views: ViewHolder): void {
  st.abandoned = true;
  st.dest = undefined;
  dropSingle(st, views);
}

/** A held view goes back (the reply failed, or was abandoned). */
export function dropSingle(st: ReplyState, views: ViewHolder): void {
  if (st.single !== undefined) views.release(st.single);
  st.single = undefined;
}

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
  const name = type === ChunkType.OFFSET_DATA ? 'OFFSET_DATA' : 'OFFSET_HOLE';
  if (st.command !== Command.READ) {
    unexpected(rules, `${name} chunk in reply to ${commandName(st.command)}`);
    return;
  }
  if (type === ChunkType.OFFSET_DATA && payload.length > 8) {
    // u64 offset | data — read in place: this is the one chunk of every bulk read.
    content(rules, st, offsetAt(payload), payload.subarray(8), payload.length - 8, views);
    return;
  }
  const c = decodeChunkPayload(type, payload); // holes, and the length errors of a short OFFSET_DATA
  if (c.kind === 'offset-hole') content(rules, st, safeOffset(c.offset), undefined, c.size, views);
}

/** The u64 offset at the start of an OFFSET_DATA payload, as a safe integer. */
function offsetAt(p: Uint8Array): number {
  const hi = ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
  const lo = ((p[4]! << 24) | (p[5]! << 16) | (p[6]! << 8) | p[7]!) >>> 0;
  if (hi >= 0x200000) throw new ProtocolError(`READ chunk offset ${(BigInt(hi) << 32n) | BigInt(lo)} is beyond 2^53`);
  return hi * 0x100000000 + lo;
}

function safeOffset(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`chunk offset ${v} is beyond 2^53`);
  return Number(v);
}

/**
 * Separate ranges a READ reply may have described at once: chunks in order (or in reverse,
 * or from a few workers) stay a handful; each chunk costs up to this many steps to check.
 */
export const MAX_READ_RANGES = 16_384;

/** Records [start, end) of a READ as described; false if it overlaps what was (unless `union`). */
function describe(st: ReplyState, start: number, end: number, union: boolean): boolean {
  if (!st.whole && st.coverage === undefined && start === 0 && end === st.length) {
    st.whole = true;
    return true;
  }
  if (st.coverage === undefined) {
    st.coverage = new ReadCoverage();
    if (st.whole) st.coverage.add(0, st.length);
  }
  const ok = st.coverage.add(start, end, union);
  if (st.coverage.ranges > MAX_READ_RANGES) {
    throw new ProtocolError(
      `READ reply: its chunks left more than ${MAX_READ_RANGES} separate ranges described at once (our limit on checking chunks sent far out of order)`,
    );
  }
  return ok;
}

/** The first byte of a READ not described yet, and how many were; undefined gap when all were. */
function gapOf(st: ReplyState): { gap: number | undefined; covered: number } {
  if (st.coverage === undefined) return st.whole ? { gap: undefined, covered: st.length } : { gap: 0, covered: 0 };
  return { gap: st.coverage.firstGap(st.length), covered: st.coverage.covered };
}

/** `size` bytes at `at`: `data`, or zeroes (a hole). Checks bounds and overlaps, then stores unless abandoned. */
function content(rules: ReplyRules, st: ReplyState, at: number, data: Uint8Array | undefined, size: number, views: ViewHolder): void {
  const rel = at - st.offset;
  if (rel < 0 || rel + size > st.length) {
    throw new ProtocolError(
      `READ chunk ${at}+${size} lies outside the request ${st.offset}+${st.length} (the spec: content MUST lie within the request)`,
    );
  }
  if (!describe(st, rel, rel + size, !rules.strict)) {
    throw new ProtocolError(
      `READ chunk ${at}+${size} overlaps bytes an earlier chunk described (the spec: content chunks MUST NOT overlap)`,
    );
  }
  // Holes that overlap (relaxed mode merges them) would each zero their range again: bounded to twice the request.
  if (data === undefined) st.holeBytes += size;
  if (st.holeBytes > 2 * st.length) {
    throw new ProtocolError(`READ reply: hole chunks described ${st.holeBytes} bytes of a ${st.length}-byte request (overlapping holes)`);
  }
  if (st.abandoned) return;
  if (st.dest === undefined) {
    if (data !== undefined && rel === 0 && size === st.length && st.single === undefined) {
      views.hold(data); // the whole answer in one view: no copy
      st.single = data;
      return;
    }
    st.dest = new Uint8Array(st.length);
    if (st.single !== undefined) st.dest.set(st.single);
    dropSingle(st, views);
  }
  const pos = st.destPos + rel;
  if (data !== undefined) st.dest.set(data, pos);
  else st.dest.fill(0, pos, pos + size);
}

function statusChunk(rules: ReplyRules, st: ReplyState, type: number, payload: Uint8Array): void {
  const name = type === ChunkType.BLOCK_STATUS ? 'BLOCK_STATUS' : 'BLOCK_STATUS_EXT';
  if (st.command !== Command.BLOCK_STATUS) {
    unexpected(rules, `${name} chunk in reply to ${commandName(st.command)}`);
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
  if (st.extents!.has(id)) {
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
  st.extents!.set(id, list);
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

/** Longest error message the spec allows (the string limit). */
const MAX_MESSAGE = 4096;

function errorChunk(rules: ReplyRules, st: ReplyState, type: number, payload: Uint8Array): void {
  if (rules.strict && payload.length >= 6) {
    const msgLen = (payload[4]! << 8) | payload[5]!;
    if (msgLen > MAX_MESSAGE) {
      throw new ProtocolError(
        `error chunk with a message of ${msgLen} bytes (the spec: message length MUST NOT exceed the 4096-byte string limit)`,
      );
    }
  }
  if (type === ChunkType.ERROR || type === ChunkType.ERROR_OFFSET) {
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
    return;
  }
  // An error chunk type we do not know: the request failed; the stream goes on if its lengths are sane.
  if (payload.length < 6)
    throw new ProtocolError(`error chunk type 0x${type.toString(16)} of ${payload.length} bytes (error chunks start with 6)`);
  const v = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const msgLen = v.getUint16(4);
  if (msgLen > payload.length - 6)
    throw new ProtocolError(`error chunk type 0x${type.toString(16)}: message length ${msgLen} exceeds the chunk`);
  st.error ??= errnoError(rules, v.getUint32(0), `unknown error chunk type 0x${type.toString(16)}`);
}

/** The request's error for an errno from the wire; an unknown value reads as EINVAL, 0 breaks a MUST. */
function errnoError(rules: ReplyRules, errno: number, message: string, offset?: number): NbdErrnoError {
  if (errno === 0 && rules.strict) throw new ProtocolError('error reply with error value 0 (the spec: it MUST be nonzero)');
  return new NbdErrnoError(normalizeErrno(errno), message || undefined, { offset });
}

/** The reply is complete: check what the request needed, and produce its outcome. */
function finish(rules: ReplyRules, st: ReplyState, views: ViewHolder): ReplyOutcome {
  if (st.command === Command.READ && st.error === undefined) {
    const { gap, covered } = gapOf(st);
    if (gap !== undefined) {
      if (rules.strict) {
        throw new ProtocolError(
          `READ reply done with ${st.length - covered} of ${st.length} bytes not described, the first at ${st.offset + gap} (the spec: a successful reply MUST cover the whole request)`,
        );
      }
      st.error = new NbdErrnoError(Errno.EIO, `the server answered ${covered} of ${st.length} bytes of a read`);
    }
  }
  if (st.command === Command.BLOCK_STATUS && st.error === undefined) {
    const missing = st.contextIds.filter((id) => !st.extents!.has(id));
    if (missing.length > 0 && rules.strict) {
      throw new ProtocolError(
        `block status reply done without a status chunk for context id ${missing.join(', ')} (the spec: exactly one per context)`,
      );
    }
    if (missing.length === st.contextIds.length) st.error = new NbdErrnoError(Errno.EIO, 'block status reply without any status chunk');
    else for (const id of missing) st.extents!.set(id, []);
  }
  if (st.error !== undefined) {
    dropSingle(st, views);
    return { ok: false, error: st.error };
  }
  if (st.command === Command.BLOCK_STATUS) return { ok: true, value: st.extents };
  if (st.command !== Command.READ || st.intoCaller || st.abandoned) return { ok: true, value: undefined };
  if (st.single !== undefined) return { ok: true, value: st.single, held: st.single };
  return { ok: true, value: st.dest };
}
