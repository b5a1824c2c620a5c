// What a client learns about an export during the handshake, decoded from the
// raw transmission flags once so callers read `info.can.trim`, not bit masks.
import { type BlockSizes, isPowerOfTwo, Limits, ProtocolError, TransmissionFlag as T } from '@nbd/protocol';

export type { BlockSizes };

/** What the handshake says about an export, decoded from its transmission flags. */
export interface ExportInfo {
  /** The canonical name when the server sent one, else the name asked for. */
  name: string;
  /** Bytes. */
  size: number;
  /** Raw transmission flags (`TransmissionFlag`). */
  flags: number;
  /** Commands and flags the server advertises (writes, trims and zeroes are false on a read-only export). */
  can: {
    read: true;
    write: boolean;
    flush: boolean;
    fua: boolean;
    trim: boolean;
    zero: boolean;
    fastZero: boolean;
    cache: boolean;
    df: boolean;
    multiConn: boolean;
    blockStatusPayload: boolean;
  };
  /** Properties of the export. */
  is: { readOnly: boolean; rotational: boolean };
  /** Present when the server sent NBD_INFO_BLOCK_SIZE with valid values. */
  blockSizes?: BlockSizes;
  /** The server's description (NBD_INFO_DESCRIPTION), if it sent one. */
  description?: string;
}

/** Builds an ExportInfo; a size beyond 2^53 cannot be a JS number and is refused clearly. */
export function makeExportInfo(
  name: string,
  size: bigint,
  flags: number,
  extra: { blockSizes?: BlockSizes; description?: string } = {},
): ExportInfo {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ProtocolError(`export size ${size} exceeds 2^53 - 1 bytes, which this client cannot address`);
  }
  const has = (bit: number) => (flags & bit) !== 0;
  const readOnly = has(T.READ_ONLY);
  const info: ExportInfo = {
    name,
    size: Number(size),
    flags,
    can: {
      read: true,
      write: !readOnly,
      flush: has(T.SEND_FLUSH),
      fua: has(T.SEND_FUA),
      trim: has(T.SEND_TRIM) && !readOnly,
      zero: has(T.SEND_WRITE_ZEROES) && !readOnly,
      fastZero: has(T.SEND_FAST_ZERO) && has(T.SEND_WRITE_ZEROES) && !readOnly,
      cache: has(T.SEND_CACHE),
      df: has(T.SEND_DF),
      multiConn: has(T.CAN_MULTI_CONN),
      blockStatusPayload: has(T.BLOCK_STATUS_PAYLOAD),
    },
    is: { readOnly, rotational: has(T.ROTATIONAL) },
  };
  if (extra.blockSizes) info.blockSizes = extra.blockSizes;
  if (extra.description !== undefined) info.description = extra.description;
  return info;
}

/** The spec's rules for NBD_INFO_BLOCK_SIZE; a server breaking them is ignored rather than obeyed. */
export function validBlockSizes(b: BlockSizes): boolean {
  return (
    isPowerOfTwo(b.min) &&
    b.min <= Limits.MAX_MIN_BLOCK &&
    isPowerOfTwo(b.preferred) &&
    b.preferred >= b.min &&
    (b.max === Limits.NO_PAYLOAD_LIMIT || (b.max >= b.preferred && b.max % b.min === 0))
  );
}
