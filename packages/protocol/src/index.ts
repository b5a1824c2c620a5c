// @nbd/protocol: every message of the NBD protocol as pure codecs, no I/O.
import { requireSupportedNode } from './node-version.js';

requireSupportedNode(); // one clear error as the package loads on Node.js < 22, not a TypeError later

export { abortError, raceSignal, throwIfAborted, tieToSignal } from './abort.js';
export { type ArenaDecoder, type ArenaPolicy, ArenaPool, ReadArenas, type ViewLease } from './arenas.js';
export { ByteQueue } from './byte-queue.js';
export {
  type BlockDescriptor,
  type ChunkHeader,
  type ChunkPayload,
  chunkTypeOf,
  decodeChunkHeader,
  decodeChunkPayload,
  type ErrorChunkHead,
  encodeChunk,
  encodeChunkPayload,
  readChunkHeader,
  readErrorChunkHead,
  readOffsetData,
  readReplyHeadSize,
  writeChunkHeader,
  writeReadReplyHead,
} from './chunks.js';
export {
  AllocationState,
  CHUNK_ERROR_BIT,
  ChunkType,
  ClientFlag,
  Command,
  CommandFlag,
  DirtyBitmapState,
  Errno,
  flagNames,
  HandshakeFlag,
  Info,
  Limits,
  Magic,
  MetaContext,
  nameOf,
  OPTION_REPLY_ERROR_BIT,
  Option,
  OptionReply,
  ReplyFlag,
  Size,
  TransmissionFlag,
  ZERO_HOLE,
} from './constants.js';
export {
  describeErrno,
  ErrorCode,
  isKnownErrno,
  NbdAbortError,
  NbdClosedError,
  NbdErrnoError,
  NbdError,
  NbdInvalidArgumentError,
  NbdOptionError,
  NbdStateError,
  NbdTimeoutError,
  NbdUnsupportedError,
  normalizeErrno,
  ProtocolError,
  toNbdErrno,
} from './errors.js';
export {
  type ClientDecoderLimits,
  type ClientFrame,
  ClientStreamDecoder,
  type ServerDecoderLimits,
  type ServerFrame,
  ServerStreamDecoder,
} from './frames.js';
export {
  type BlockSizes,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  type ExportNameReply,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  type Greeting,
  type InfoReply,
  type OptionReplyMessage,
  type OptionRequest,
  optionCode,
  optionReplyCode,
} from './handshake.js';
export { NbdNodeVersionError, NODE_MAJOR_NEEDED, requireSupportedNode } from './node-version.js';
export {
  type BlockStatusPayload,
  decodeBlockStatusPayload,
  decodeRequest,
  decodeSimpleReply,
  encodeBlockStatusPayload,
  encodeRequest,
  encodeSimpleReply,
  type Request,
  readRequestHeader,
  requestPayloadLength,
  type SimpleReply,
  writeRequest,
  writeSimpleReply,
} from './transmission.js';
export type { ByteSink, PeerInfo, Transport } from './transport.js';
export { formatNbdUri, KNOWN_URI_PARAMS, type NbdUri, NbdUriError, parseNbdUri } from './uri.js';
export { after, isAllZero, isPowerOfTwo, isPromise, type MaybePromise, writeZeroes, zeroChunk } from './values.js';
