// Shared by the fuzz targets: what counts as an expected rejection, and a small
// summary of decoded frames so two decodings of one stream can be compared.
import { plainReply, readReply, statusReply } from '../../packages/client/dist/reply-state.js';
import { Command, ProtocolError } from '../../packages/protocol/dist/index.js';

/** The client's reply state for one request, by its command (what the request table makes). */
export function replyStateFor({ command, offset, length, flags, contextIds }) {
  if (command === Command.READ) return readReply(offset, length, flags);
  if (command === Command.BLOCK_STATUS) return statusReply(offset, length, flags, contextIds);
  return plainReply(command, offset, length, flags);
}

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

/**
 * Pushes `pieces` into stream decoder `d`, handing each frame to `onFrame`; after each
 * piece, the bytes `d` still wants must fit in one frame (`maxFrame()` bytes). Returns
 * the frames as keys and the message of the ProtocolError that ended it, if one did.
 */
export function decodePieces(d, pieces, onFrame, maxFrame) {
  const frames = [];
  const error = rejecting(() => {
    for (const piece of pieces) {
      d.push(piece);
      for (let f = d.next(); f !== undefined; f = d.next()) {
        frames.push(frameKey(f));
        onFrame(f);
      }
      invariant(d.wanted <= maxFrame(), `wanted ${d.wanted} beyond a frame`);
    }
  });
  return { frames, error: error?.message };
}

/**
 * A stream target's fuzz function. Input: mode byte, split point (× 4), the stream.
 * `decodeAll(mode, pieces)` must give the same frames, and fail the same way, for the
 * stream whole and split in two.
 */
export function wholeVsSplit(decodeAll) {
  return (data) => {
    if (data.length < 2) return;
    const mode = data[0];
    const body = new Uint8Array(data.buffer, data.byteOffset + 2, data.length - 2); // not a Buffer: payloads compare as bytes
    const at = Math.min(data[1] * 4, body.length);
    const whole = decodeAll(mode, [body]);
    const split = decodeAll(mode, [body.subarray(0, at), body.subarray(at)]);
    invariant(
      whole.frames.length === split.frames.length && whole.frames.every((f, i) => f === split.frames[i]),
      'split stream decodes differently',
    );
    invariant(whole.error === split.error, `split stream fails differently: ${whole.error} / ${split.error}`);
  };
}
