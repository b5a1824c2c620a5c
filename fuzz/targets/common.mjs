// Shared by the fuzz targets: what counts as an expected rejection, and a small
// summary of decoded frames so two decodings of one stream can be compared.
import { ProtocolError } from '../../packages/protocol/dist/index.js';

/** Runs `fn`; a ProtocolError (the peer's bad bytes, rejected cleanly) ends it quietly. Anything else is a finding. */
export function rejecting(fn) {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw e;
  }
}

/** Throws a finding unless `cond`. */
export function invariant(cond, what) {
  if (!cond) throw new Error(`invariant broken: ${what}`);
}

export const hex = (b) => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

/** A frame as a comparable string (bigints and byte arrays spelled out). */
export function frameKey(f) {
  return JSON.stringify(f, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? hex(v) : v));
}

export function sameBytes(a, b) {
  return (
    a.length === b.length &&
    Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0
  );
}
