// @nbd/protocol: every message of the NBD protocol as pure codecs, no I/O.
import { requireSupportedNode } from './node-version.js';
requireSupportedNode(); // one clear error as the package loads on Node.js < 22, not a TypeError later
export { NODE_MAJOR_NEEDED, NbdNodeVersionError, requireSupportedNode } from './node-version.js';
export {
  AllocationState,
  CHUNK_ERROR_BIT,
  ChunkType,
  ClientFlag,
  Command,
  CommandFlag,
  DirtyBitmapState,
  Errno,
  HandshakeFlag,
  Info,
  Limits,
  Magic,
  MetaContext,
  OPTION_REPLY_ERROR_BIT,
  Option,
  OptionReply,
  ReplyFlag,
  Size,
  TransmissionFlag,
  ZERO_HOLE,
  flagNames,
  nameOf,
} from './constants.js';
export { type MaybePromise, after, isAllZero, isPowerOfTwo, isPromise } from './values.js';
export {
  ErrorCode,
  NbdAbortError,
  NbdClosedError,
  NbdErrnoError,
  NbdError,
  NbdInvalidArgumentError,
  NbdOptionError,
  NbdStateError,
  NbdTimeoutError,
  NbdUnsupportedError,
  ProtocolError,
  normalizeErrno,
  toNbdErrno,
} from './errors.js';
export { abortError, raceSignal, throwIfAborted, tieToSignal } from './abort.js';
export { type ArenaDecoder, ArenaPool, type ArenaPolicy, ReadArenas, type ViewLease } from './arenas.js';
export type { ByteSink, PeerInfo, Transport } from './transport.js';
export {
  type BlockSizes,
  type ExportNameReply,
  type Greeting,
  type InfoReply,
  type OptionReplyMessage,
  type OptionRequest,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  optionCode,
  optionReplyCode,
} from './handshake.js';
export {
  type BlockStatusPayload,
  type Request,
  type SimpleReply,
  decodeBlockStatusPayload,
  decodeRequest,
  decodeSimpleReply,
  encodeBlockStatusPayload,
  encodeRequest,
  encodeSimpleReply,
  readRequestHeader,
  requestPayloadLength,
  writeRequest,
  writeSimpleReply,
} from './transmission.js';
export {
  type BlockDescriptor,
  type ChunkHeader,
  type ChunkPayload,
  chunkTypeOf,
  decodeChunkHeader,
  decodeChunkPayload,
  encodeChunk,
  encodeChunkPayload,
  readChunkHeader,
  readReplyHeadSize,
  writeChunkHeader,
  writeReadReplyHead,
} from './chunks.js';
export { ByteQueue } from './byte-queue.js';
export {
  type ClientDecoderLimits,
  type ClientFrame,
  ClientStreamDecoder,
  type ServerDecoderLimits,
  type ServerFrame,
  ServerStreamDecoder,
} from './frames.js';
export { KNOWN_URI_PARAMS, type NbdUri, NbdUriError, formatNbdUri, parseNbdUri } from './uri.js';
