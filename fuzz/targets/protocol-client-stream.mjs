// What a server reads: ClientStreamDecoder over client flags, options and requests
// (compact and extended headers), the option-data decoders and the extended
// BLOCK_STATUS payload. Input: mode byte (1: start in transmission, 2: extended
// headers, 4: small payload limit, 8: small drain limit), a split point, the stream.
// Oracles: only ProtocolError may be thrown; the stream decodes to the same frames
// whole and split in two; a decoded option re-encodes to the bytes it came from;
// a payload is exactly the length its header claims; `wanted` stays within a frame.
import {
  ClientStreamDecoder,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  decodeOptionRequest,
  encodeBlockStatusPayload,
  encodeOptionRequest,
  requestPayloadLength,
  Size,
} from '../../packages/protocol/dist/index.js';
import { decodePieces, invariant, rejecting, sameBytes, wholeVsSplit } from './common.mjs';

const OPTION_HEADER = 16;

function decodeAll(mode, pieces) {
  const ext = (mode & 2) !== 0;
  const maxPayload = mode & 4 ? 512 : 1 << 20;
  const d = new ClientStreamDecoder({ maxOptionLength: 8192, maxPayload, maxDrain: mode & 8 ? 4096 : 1 << 24 });
  if (mode & 1) d.startTransmission(ext, maxPayload);
  return decodePieces(
    d,
    pieces,
    (f) => check(f, ext, maxPayload),
    () => (d.extended ? Size.EXTENDED_REQUEST : Size.REQUEST) + maxPayload,
  );
}

function check(f, ext, maxPayload) {
  if (f.kind === 'option') {
    const req = rejecting(() => decodeOptionRequest(f.option, f.data)) === undefined ? decodeOptionRequest(f.option, f.data) : undefined;
    if (req === undefined || req.kind === 'abort') return; // ABORT ignores its data
    const wire = new Uint8Array(OPTION_HEADER + f.data.length);
    const v = new DataView(wire.buffer);
    v.setBigUint64(0, 0x49484156454f5054n);
    v.setUint32(8, f.option);
    v.setUint32(12, f.data.length);
    wire.set(f.data, OPTION_HEADER);
    invariant(sameBytes(encodeOptionRequest(req), wire), `option ${f.option} does not re-encode to its bytes`);
    return;
  }
  if (f.kind !== 'request') return;
  const n = requestPayloadLength(f.request, ext);
  if (f.oversized) invariant(n > maxPayload && f.payload === undefined, 'oversized flag on a payload within the limit');
  else invariant((f.payload?.length ?? 0) === n, `payload of ${f.payload?.length} bytes for a header claiming ${n}`);
  if (ext && f.request.type === Command.BLOCK_STATUS && (f.request.flags & CommandFlag.PAYLOAD_LEN) !== 0 && f.payload) {
    const p = rejecting(() => decodeBlockStatusPayload(f.payload)) === undefined ? decodeBlockStatusPayload(f.payload) : undefined;
    if (p) invariant(sameBytes(encodeBlockStatusPayload(p), f.payload), 'block status payload does not re-encode');
  }
}

export const fuzz = wholeVsSplit(decodeAll);
