// What one request's reply has brought so far, as a union by command: a READ's bytes
// (a view held while it is the one chunk covering the request, else a buffer), a
// BLOCK_STATUS's extents by context id, or nothing but the error of the others. The
// reply assembler fills it; the command table (commands.ts) turns a finished one into
// its caller's result.
import { Command, type NbdErrnoError } from '@nbd/protocol';
import type { ReadCoverage } from './read-coverage.js';

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

interface ReplyBase {
  /** Where the request reads or acts, as sent. */
  readonly offset: number;
  /** READ: bytes asked for. BLOCK_STATUS: the status length asked for. */
  readonly length: number;
  /** Command flags sent (REQ_ONE matters here). */
  readonly flags: number;
  /** The first error the reply reported. */
  error: NbdErrnoError | undefined;
  /** A structured or extended chunk came for this request (so only a DONE chunk may end it). */
  chunked: boolean;
  /** The caller gave up: chunks are still checked, never stored. */
  abandoned: boolean;
}

/** A READ's reply. */
export interface ReadReply extends ReplyBase {
  readonly command: typeof Command.READ;
  /** Where the data goes; undefined until needed (a whole-range chunk is kept as a view instead). */
  dest: Uint8Array | undefined;
  destPos: number;
  /** `dest` is the caller's (readInto): the result is the filled buffer, not a value. */
  readonly intoCaller: boolean;
  /** The one chunk covering the whole range, held in its arena until handed on. */
  single: Uint8Array | undefined;
  /** The one chunk so far covered the whole request (the usual reply: no ReadCoverage needed). */
  whole: boolean;
  /** What a reply in several chunks has described. */
  coverage: ReadCoverage | undefined;
  /** Bytes hole chunks described (zeroes cost work but no bytes on the wire, so they are bounded). */
  holeBytes: number;
}

/** A BLOCK_STATUS's reply: the context ids asked about, and the extents each got. */
export interface StatusReply extends ReplyBase {
  readonly command: typeof Command.BLOCK_STATUS;
  readonly contextIds: readonly number[];
  readonly extents: Map<number, Extent[]>;
}

/** Commands whose reply brings nothing but success or an error. */
export type PlainCommand = (typeof Command)['WRITE' | 'FLUSH' | 'TRIM' | 'CACHE' | 'WRITE_ZEROES'];

/** The reply of a command that brings no data. */
export interface PlainReply extends ReplyBase {
  readonly command: PlainCommand;
}

/** The reply one request waits for, and what it has brought so far. */
export type ReplyState = ReadReply | StatusReply | PlainReply;

/** A READ's reply state; `dest` is the caller's buffer of a readInto (its bytes go at `destPos`). */
export function readReply(offset: number, length: number, flags: number, dest?: Uint8Array, destPos = 0): ReadReply {
  return {
    command: Command.READ,
    offset,
    length,
    flags,
    error: undefined,
    chunked: false,
    abandoned: false,
    dest,
    destPos,
    intoCaller: dest !== undefined,
    single: undefined,
    whole: false,
    coverage: undefined,
    holeBytes: 0,
  };
}

/** A BLOCK_STATUS's reply state, for the context ids the reply must describe. */
export function statusReply(offset: number, length: number, flags: number, contextIds: readonly number[]): StatusReply {
  return {
    command: Command.BLOCK_STATUS,
    offset,
    length,
    flags,
    error: undefined,
    chunked: false,
    abandoned: false,
    contextIds,
    extents: new Map(),
  };
}

/** The reply state of a command that brings no data. */
export function plainReply(command: PlainCommand, offset: number, length: number, flags: number): PlainReply {
  return { command, offset, length, flags, error: undefined, chunked: false, abandoned: false };
}

/** The caller gave up: nothing is stored or written into its buffer from now on; a held view goes back. */
export function abandonReply(st: ReplyState, views: ViewHolder): void {
  st.abandoned = true;
  if (st.command !== Command.READ) return;
  st.dest = undefined;
  dropSingle(st, views);
}

/** A held view goes back (the reply failed, or was abandoned). */
export function dropSingle(st: ReadReply, views: ViewHolder): void {
  if (st.single !== undefined) views.release(st.single);
  st.single = undefined;
}

/** A finished READ's one-chunk view, still held in its arena: the caller takes over that hold. */
export function takeSingle(st: ReadReply): Uint8Array | undefined {
  const single = st.single;
  st.single = undefined;
  return single;
}

/** A finished READ's buffer, assembled from its chunks (when no single view was kept). */
export function assembledBytes(st: ReadReply): Uint8Array {
  if (st.dest === undefined) throw new Error('internal: a READ reply done without its bytes');
  return st.dest;
}
