// A READ's content as its reply's chunks describe it: each chunk must lie within the
// request and not overlap another (relaxed mode merges overlaps), and a successful
// reply must describe every byte. Bytes go where the request wants them: the one
// chunk covering the request is kept as a view, anything else is assembled in a buffer.
import { Errno, NbdErrnoError, ProtocolError } from '@nbd/protocol';
import { ReadCoverage } from './read-coverage.js';
import { dropSingle, type ReadReply, type ReplyRules, type ViewHolder } from './reply-state.js';

/**
 * Separate ranges a READ reply may have described at once: chunks in order (or in reverse,
 * or from a few workers) stay a handful; each chunk costs up to this many steps to check.
 */
export const MAX_READ_RANGES = 16_384;

/** Records [start, end) of a READ as described; false if it overlaps what was (unless `union`). */
function describe(st: ReadReply, start: number, end: number, union: boolean): boolean {
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
function gapOf(st: ReadReply): { gap: number | undefined; covered: number } {
  if (st.coverage === undefined) return st.whole ? { gap: undefined, covered: st.length } : { gap: 0, covered: 0 };
  return { gap: st.coverage.firstGap(st.length), covered: st.coverage.covered };
}

/** A successful READ reply ends: bytes it did not describe break a MUST (strict), or fail the read with EIO. */
export function checkDescribed(rules: ReplyRules, st: ReadReply): void {
  const { gap, covered } = gapOf(st);
  if (gap === undefined) return;
  if (rules.strict) {
    throw new ProtocolError(
      `READ reply done with ${st.length - covered} of ${st.length} bytes not described, the first at ${st.offset + gap} (the spec: a successful reply MUST cover the whole request)`,
    );
  }
  st.error = new NbdErrnoError(Errno.EIO, `the server answered ${covered} of ${st.length} bytes of a read`);
}

/** `size` bytes at `at`: `data`, or zeroes (a hole). Checks bounds and overlaps, then stores unless abandoned. */
export function content(rules: ReplyRules, st: ReadReply, at: number, data: Uint8Array | undefined, size: number, views: ViewHolder): void {
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
