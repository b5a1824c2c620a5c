// What a client reads: ServerStreamDecoder over greetings (newstyle, oldstyle),
// option replies, EXPORT_NAME replies and transmission replies (simple, structured
// and extended chunks), with the option-reply and chunk-payload decoders. Input:
// mode byte (1: start in transmission, 2: extended headers, 4: EXPORT_NAME was sent,
// 8: NO_ZEROES), a split point, the stream. The owner's part is played as a client
// would: GO's ACK starts transmission; odd cookies below 2^16 are READs of cookie/2 bytes.
// Oracles: only ProtocolError may be thrown; whole and split decode alike; decoded
// option replies and chunks re-encode to their bytes; `wanted` stays within a frame.
import {
  ChunkType,
  decodeChunkPayload,
  decodeOptionReply,
  encodeChunk,
  encodeOptionReply,
  Option,
  OptionReply,
  ReplyFlag,
  ServerStreamDecoder,
} from '../../packages/protocol/dist/index.js';
import { decodePieces, invariant, rejecting, sameBytes, wholeVsSplit } from './common.mjs';

const MAX_CHUNK = 1 << 20;

function decodeAll(mode, pieces) {
  const ext = (mode & 2) !== 0;
  const d = new ServerStreamDecoder({ maxOptionReply: 1 << 16, maxChunk: MAX_CHUNK });
  d.readLength = (cookie) => (cookie < 0x10000n && (cookie & 1n) === 1n ? Number(cookie >> 1n) : undefined);
  if (mode & 1) d.startTransmission(ext);
  const onFrame = (f) => {
    if (f.kind === 'greeting' && f.greeting.style === 'newstyle' && mode & 4) d.expectExportNameReply((mode & 8) !== 0);
    if (f.kind === 'option-reply') {
      checkOptionReply(f);
      if (f.option === Option.GO && f.type === OptionReply.ACK) d.startTransmission(ext);
    }
    if (f.kind === 'chunk') checkChunk(f, d.extended);
  };
  return decodePieces(d, pieces, onFrame, () => 32 + MAX_CHUNK);
}

function checkOptionReply(f) {
  let reply;
  if (rejecting(() => (reply = decodeOptionReply(f.type, f.data))) !== undefined) return;
  if (reply.kind === 'error' || reply.kind === 'unknown') return; // error messages are read leniently
  const again = encodeOptionReply(f.option, reply).subarray(20);
  invariant(sameBytes(again, f.data), `option reply 0x${f.type.toString(16)} does not re-encode to its bytes`);
}

function checkChunk(f, extended) {
  let payload;
  if (rejecting(() => (payload = decodeChunkPayload(f.header.type, f.payload))) !== undefined) return;
  if (payload.kind === 'error' || payload.kind === 'error-offset') {
    invariant(f.header.type === ChunkType.ERROR || f.header.type === ChunkType.ERROR_OFFSET, 'error payload from another type');
    return; // messages are read leniently
  }
  if (f.header.flags & ~ReplyFlag.DONE) return;
  const bytes = encodeChunk(f.header.cookie, payload, { done: (f.header.flags & ReplyFlag.DONE) !== 0, extended, offset: f.header.offset });
  invariant(sameBytes(bytes.subarray(extended ? 32 : 20), f.payload), `chunk type 0x${f.header.type.toString(16)} does not re-encode`);
}

export const fuzz = wholeVsSplit(decodeAll);
