// Every number of the NBD protocol, one `as const` table per section of the spec
// (doc/proto.md of the NBD project, plus its extended-headers extension).

/** §Handshake and §Transmission: magic numbers. 64-bit ones are bigint. */
export const Magic = {
  /** "NBDMAGIC": first 8 bytes the server sends, all handshake styles. */
  NBDMAGIC: 0x4e42444d41474943n,
  /** Oldstyle: bytes 8..15 of the greeting (`cliserv_magic`). */
  OLDSTYLE: 0x00420281861253n,
  /** "IHAVEOPT": newstyle greeting bytes 8..15, and the prefix of every option request. */
  IHAVEOPT: 0x49484156454f5054n,
  /** Prefix of every option reply. */
  OPTION_REPLY: 0x0003e889045565a9n,
  REQUEST: 0x25609513,
  EXTENDED_REQUEST: 0x21e41c71,
  SIMPLE_REPLY: 0x67446698,
  STRUCTURED_REPLY: 0x668e33ef,
  EXTENDED_REPLY: 0x6e8a278c,
} as const;

/** §Newstyle negotiation: handshake flags (u16, server → client). */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** §Newstyle negotiation: client flags (u32, client → server). */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** §Option types (`NBD_OPT_*`). */
export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** §Option reply types (`NBD_REP_*`). Types with bit 31 set are errors. */
export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;

/** Bit 31 of an option reply type marks an error. */
export const OPTION_REPLY_ERROR_BIT = 0x80000000;

/** §Info types (`NBD_INFO_*`), carried in `NBD_REP_INFO`. */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** §Transmission flags (u16). */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

/** §Request types (`NBD_CMD_*`, u16). */
export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** §Command flags (u16). */
export const CommandFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** §Structured reply flags (u16). */
export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

/** §Structured reply types (`NBD_REPLY_TYPE_*`, u16). Bit 15 marks an error chunk. */
export const ChunkType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Bit 15 of a chunk type marks an error chunk. */
export const CHUNK_ERROR_BIT = 0x8000;

/** §Error values: the only errno values the spec lets cross the wire. */
export const Errno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** §base:allocation metadata context: status flags. */
export const AllocationState = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** A hole that reads as zeroes: what an unallocated range of a sparse device reports. */
export const ZERO_HOLE = AllocationState.HOLE | AllocationState.ZERO;

/** qemu's `qemu:dirty-bitmap:NAME` context: status flags. */
export const DirtyBitmapState = {
  DIRTY: 1 << 0,
} as const;

/** Names of well-known metadata contexts. */
export const MetaContext = {
  BASE_ALLOCATION: 'base:allocation',
  QEMU_ALLOCATION_DEPTH: 'qemu:allocation-depth',
  QEMU_DIRTY_BITMAP_PREFIX: 'qemu:dirty-bitmap:',
} as const;

/** Sizes and limits the spec fixes. */
export const Limits = {
  /** Default TCP port (IANA). */
  PORT: 10809,
  /** Strings (names, descriptions, queries) MUST NOT exceed this many bytes. */
  MAX_STRING: 4096,
  /** Payloads up to this size SHOULD be accepted without BLOCK_SIZE negotiation. */
  DEFAULT_MAX_PAYLOAD: 32 * 1024 * 1024,
  /** Default preferred block size when the server does not advertise one. */
  DEFAULT_PREFERRED_BLOCK: 4096,
  /** DF reads up to this size MUST be supported. */
  MAX_DF_READ: 64 * 1024,
  /** Largest minimum block size a server may advertise. */
  MAX_MIN_BLOCK: 64 * 1024,
  /** Servers SHOULD NOT send more extents than this in one status chunk. */
  MAX_EXTENTS_PER_CHUNK: 1 << 20,
  /** max-payload value meaning "no limit". */
  NO_PAYLOAD_LIMIT: 0xffffffff,
} as const;

/** Fixed frame sizes in bytes. */
export const Size = {
  OLDSTYLE_GREETING: 152,
  NEWSTYLE_GREETING: 18,
  CLIENT_FLAGS: 4,
  OPTION_HEADER: 16,
  OPTION_REPLY_HEADER: 20,
  EXPORT_NAME_REPLY: 134,
  EXPORT_NAME_REPLY_NO_ZEROES: 10,
  REQUEST: 28,
  EXTENDED_REQUEST: 32,
  SIMPLE_REPLY: 16,
  STRUCTURED_CHUNK: 20,
  EXTENDED_CHUNK: 32,
} as const;

type Table = Readonly<Record<string, number | bigint | string>>;
const reverse = new WeakMap<Table, Map<number | bigint | string, string>>();

/**
 * The name of `value` in one of the tables above, for logs and error messages:
 * `nameOf(Option, 7)` is "GO"; an unknown value gives its hex form.
 */
export function nameOf(table: Table, value: number | bigint): string {
  let map = reverse.get(table);
  if (map === undefined) {
    map = new Map(Object.entries(table).map(([k, v]) => [v, k]));
    reverse.set(table, map);
  }
  return map.get(value) ?? `0x${value.toString(16)}`;
}

/** Names of the bits set in `flags`, e.g. `flagNames(TransmissionFlag, 5)` is ["HAS_FLAGS", "SEND_FLUSH"]. */
export function flagNames(table: Readonly<Record<string, number>>, flags: number): string[] {
  const names: string[] = [];
  let rest = flags >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if ((flags & bit) !== 0) {
      names.push(name);
      rest &= ~bit;
    }
  }
  if (rest !== 0) names.push(`0x${(rest >>> 0).toString(16)}`);
  return names;
}
