// Generic netlink messages and attributes for the kernel NBD client
// (include/uapi/linux/netlink.h, genetlink.h, nbd-netlink.h): pure codecs.
import { endianness } from 'node:os';
import { NbdSystemError } from '@nbd/node';

export const LE = endianness() === 'LE'; // netlink headers and attributes are host-endian

/** Netlink message types and flags (linux/netlink.h). */
export const Nlmsg = { NOOP: 1, ERROR: 2, DONE: 3 } as const;
export const NlmFlag = { REQUEST: 1, MULTI: 2, ACK: 4, DUMP: 0x300, CAPPED: 0x100, ACK_TLVS: 0x200 } as const;

/** nlctrl (linux/genetlink.h). */
export const GENL_ID_CTRL = 0x10;
export const Ctrl = {
  CMD_GETFAMILY: 3,
  ATTR_FAMILY_ID: 1,
  ATTR_FAMILY_NAME: 2,
  ATTR_MCAST_GROUPS: 7,
  ATTR_MCAST_GRP_NAME: 1,
  ATTR_MCAST_GRP_ID: 2,
} as const;

/** The "nbd" generic netlink family (linux/nbd-netlink.h). */
export const NBD_FAMILY = 'nbd';
export const NBD_MCAST_GROUP = 'nbd_mc_group';
export const NBD_GENL_VERSION = 1;
/** `NBD_CMD_*` of the "nbd" generic netlink family (linux/nbd-netlink.h), not the NBD protocol's commands. */
export const NbdCmd = { CONNECT: 1, DISCONNECT: 2, RECONFIGURE: 3, LINK_DEAD: 4, STATUS: 5 } as const;
/** `NBD_ATTR_*`: the attribute types of the "nbd" family's commands (linux/nbd-netlink.h); sizes and timeouts are u64. */
export const NbdAttr = {
  INDEX: 1,
  SIZE_BYTES: 2,
  BLOCK_SIZE_BYTES: 3,
  TIMEOUT: 4,
  SERVER_FLAGS: 5,
  CLIENT_FLAGS: 6,
  SOCKETS: 7,
  DEAD_CONN_TIMEOUT: 8,
  DEVICE_LIST: 9,
  BACKEND_IDENTIFIER: 10,
} as const;
export const NbdSockAttr = { ITEM: 1, FD: 1 } as const;
export const NbdDeviceAttr = { ITEM: 1, INDEX: 1, CONNECTED: 2 } as const;
/** `NBD_CFLAG_*` (linux/nbd.h). */
export const KernelClientFlag = { DESTROY_ON_DISCONNECT: 1, DISCONNECT_ON_CLOSE: 2 } as const;

export const NLMSG_HDRLEN = 16;
const GENL_HDRLEN = 4;
const NLA_HDRLEN = 4;
const NLA_TYPE_MASK = 0x3fff; // strips NLA_F_NESTED / NLA_F_NET_BYTEORDER
const align4 = (n: number) => (n + 3) & ~3;

// ---------------------------------------------------------------- attributes

/** One attribute to encode; exactly one value field is set. */
export type AttrSpec =
  | { type: number; u8: number }
  | { type: number; u16: number }
  | { type: number; u32: number }
  | { type: number; u64: number | bigint }
  | { type: number; string: string }
  | { type: number; nested: AttrSpec[] };

/** A decoded attribute: its type (flags stripped) and raw payload. */
export interface Attr {
  /** Attribute type, NLA_F_NESTED and NLA_F_NET_BYTEORDER stripped (e.g. one of {@link NbdAttr}). */
  type: number;
  /** The payload without header or padding, a view into the received datagram; numbers in it are host-endian. */
  data: Uint8Array;
}

function attrPayload(a: AttrSpec): Uint8Array {
  if ('nested' in a) return encodeAttrs(a.nested);
  if ('string' in a) return new TextEncoder().encode(`${a.string}\0`);
  const width = 'u8' in a ? 1 : 'u16' in a ? 2 : 'u32' in a ? 4 : 8;
  const b = new Uint8Array(width);
  const v = new DataView(b.buffer);
  if ('u8' in a) v.setUint8(0, a.u8);
  else if ('u16' in a) v.setUint16(0, a.u16, LE);
  else if ('u32' in a) v.setUint32(0, a.u32, LE);
  else v.setBigUint64(0, BigInt(a.u64), LE);
  return b;
}

/** Encodes netlink attributes, host-endian: each `u16 len (header + payload, unpadded) | u16 type | payload | pad to 4`. */
export function encodeAttrs(attrs: readonly AttrSpec[]): Uint8Array {
  const payloads = attrs.map(attrPayload);
  const out = new Uint8Array(payloads.reduce((n, p) => n + align4(NLA_HDRLEN + p.length), 0));
  const v = new DataView(out.buffer);
  let off = 0;
  attrs.forEach((a, i) => {
    const p = payloads[i] as Uint8Array;
    v.setUint16(off, NLA_HDRLEN + p.length, LE);
    v.setUint16(off + 2, a.type, LE);
    out.set(p, off + NLA_HDRLEN);
    off += align4(NLA_HDRLEN + p.length);
  });
  return out;
}

/** Decodes a run of attributes; a truncated or overlong one is a protocol error. */
export function decodeAttrs(bytes: Uint8Array): Attr[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Attr[] = [];
  let off = 0;
  while (off + NLA_HDRLEN <= bytes.length) {
    const len = v.getUint16(off, LE);
    if (len < NLA_HDRLEN || off + len > bytes.length) {
      throw new NbdSystemError(`netlink: bad attribute length ${len} at offset ${off}`, 'EPROTO');
    }
    out.push({ type: v.getUint16(off + 2, LE) & NLA_TYPE_MASK, data: bytes.subarray(off + NLA_HDRLEN, off + len) });
    off += align4(len);
  }
  return out;
}

export function findAttr(attrs: readonly Attr[], type: number): Attr | undefined {
  return attrs.find((a) => a.type === type);
}

function view(a: Attr, width: number, what: string): DataView {
  if (a.data.length < width) throw new NbdSystemError(`netlink: attribute ${a.type} too short for ${what}`, 'EPROTO');
  return new DataView(a.data.buffer, a.data.byteOffset, a.data.byteLength);
}
export const attrU8 = (a: Attr) => view(a, 1, 'u8').getUint8(0);
export const attrU16 = (a: Attr) => view(a, 2, 'u16').getUint16(0, LE);
export const attrU32 = (a: Attr) => view(a, 4, 'u32').getUint32(0, LE);
export const attrU64 = (a: Attr) => view(a, 8, 'u64').getBigUint64(0, LE);
export function attrString(a: Attr): string {
  const nul = a.data.indexOf(0);
  return new TextDecoder().decode(nul < 0 ? a.data : a.data.subarray(0, nul));
}

// ---------------------------------------------------------------- messages

/** A netlink message header plus its payload. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** A generic netlink request. */
export interface GenlRequest {
  family: number;
  cmd: number;
  version: number;
  flags: number;
  seq: number;
  attrs: readonly AttrSpec[];
}

/**
 * Encodes a generic netlink request: `u32 len | u16 type (family id) | u16 flags | u32 seq | u32 pid (0) |
 * u8 cmd | u8 version | u16 0 | attrs`, host-endian.
 */
export function encodeGenlRequest(req: GenlRequest): Uint8Array {
  const attrs = encodeAttrs(req.attrs);
  const out = new Uint8Array(NLMSG_HDRLEN + GENL_HDRLEN + attrs.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, LE);
  v.setUint16(4, req.family, LE);
  v.setUint16(6, req.flags, LE);
  v.setUint32(8, req.seq, LE);
  v.setUint32(12, 0, LE); // pid 0: the kernel fills in our port
  v.setUint8(16, req.cmd);
  v.setUint8(17, req.version);
  out.set(attrs, NLMSG_HDRLEN + GENL_HDRLEN);
  return out;
}

/** Splits one datagram into its netlink messages. */
export function decodeMessages(bytes: Uint8Array): NlMessage[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= bytes.length) {
    const len = v.getUint32(off, LE);
    if (len < NLMSG_HDRLEN || off + len > bytes.length) {
      throw new NbdSystemError(`netlink: bad message length ${len} at offset ${off}`, 'EPROTO');
    }
    out.push({
      type: v.getUint16(off + 4, LE),
      flags: v.getUint16(off + 6, LE),
      seq: v.getUint32(off + 8, LE),
      pid: v.getUint32(off + 12, LE),
      payload: bytes.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** A decoded generic netlink message body. */
export interface GenlMessage {
  cmd: number;
  version: number;
  attrs: Attr[];
}

/** Decodes a generic netlink message body (`u8 cmd | u8 version | u16 reserved | attrs`); a truncated one is an EPROTO NbdSystemError. */
export function decodeGenl(payload: Uint8Array): GenlMessage {
  if (payload.length < GENL_HDRLEN) throw new NbdSystemError('netlink: generic netlink header truncated', 'EPROTO');
  return { cmd: payload[0] as number, version: payload[1] as number, attrs: decodeAttrs(payload.subarray(GENL_HDRLEN)) };
}

const NLMSGERR_ATTR_MSG = 1;

/**
 * Decodes an NLMSG_ERROR message (`i32 -errno | original nlmsghdr (+ its payload unless CAPPED) | ext-ack attrs if ACK_TLVS`):
 * `errno` positive, 0 for an ACK; `message` is the kernel's extended-ack text, when it sent one.
 */
export function decodeError(msg: NlMessage): { errno: number; message?: string } {
  const p = msg.payload;
  if (p.length < 4) throw new NbdSystemError('netlink: error message truncated', 'EPROTO');
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const err = -v.getInt32(0, LE) | 0; // | 0: an ACK is +0, not -0
  if (!(msg.flags & NlmFlag.ACK_TLVS) || p.length < 4 + NLMSG_HDRLEN) return { errno: err };
  const origLen = msg.flags & NlmFlag.CAPPED ? NLMSG_HDRLEN : v.getUint32(4, LE);
  const tlvs = p.subarray(Math.min(p.length, 4 + align4(origLen)));
  const text = findAttr(decodeAttrs(tlvs), NLMSGERR_ATTR_MSG);
  return text ? { errno: err, message: attrString(text) } : { errno: err };
}
