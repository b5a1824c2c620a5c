// Raw generic netlink for the kernel NBD client (include/uapi/linux/nbd-netlink.h):
// message and attribute codecs (pure), a non-blocking socket polled on the event
// loop (never blocks it), family lookup through nlctrl, and the NBD commands.
import { endianness } from 'node:os';
import { NbdLinuxError } from './errors.js';
import { SOCK_CLOEXEC, SOCK_NONBLOCK, check, closeFd, errno, libc, pollReadable } from './ffi.js';

const LE = endianness() === 'LE'; // netlink headers and attributes are host-endian

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
export const NbdCmd = { CONNECT: 1, DISCONNECT: 2, RECONFIGURE: 3, LINK_DEAD: 4, STATUS: 5 } as const;
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
export const ClientFlag = { DESTROY_ON_DISCONNECT: 1, DISCONNECT_ON_CLOSE: 2 } as const;

const NLMSG_HDRLEN = 16;
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
  type: number;
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

// each: u16 len (header + payload, unpadded) | u16 type | payload | pad to 4
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
      throw new NbdLinuxError(`netlink: bad attribute length ${len} at offset ${off}`, 'EPROTO');
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
  if (a.data.length < width) throw new NbdLinuxError(`netlink: attribute ${a.type} too short for ${what}`, 'EPROTO');
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

// u32 len | u16 type | u16 flags | u32 seq | u32 pid | u8 cmd | u8 version | u16 0 | attrs
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
      throw new NbdLinuxError(`netlink: bad message length ${len} at offset ${off}`, 'EPROTO');
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

// u8 cmd | u8 version | u16 reserved | attrs
export function decodeGenl(payload: Uint8Array): GenlMessage {
  if (payload.length < GENL_HDRLEN) throw new NbdLinuxError('netlink: generic netlink header truncated', 'EPROTO');
  return { cmd: payload[0] as number, version: payload[1] as number, attrs: decodeAttrs(payload.subarray(GENL_HDRLEN)) };
}

const NLMSGERR_ATTR_MSG = 1;

// i32 -errno | original nlmsghdr (+ its payload unless CAPPED) | ext-ack attrs if ACK_TLVS
export function decodeError(msg: NlMessage): { errno: number; message?: string } {
  const p = msg.payload;
  if (p.length < 4) throw new NbdLinuxError('netlink: error message truncated', 'EPROTO');
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const err = -v.getInt32(0, LE) | 0; // | 0: an ACK is +0, not -0
  if (!(msg.flags & NlmFlag.ACK_TLVS) || p.length < 4 + NLMSG_HDRLEN) return { errno: err };
  const origLen = msg.flags & NlmFlag.CAPPED ? NLMSG_HDRLEN : v.getUint32(4, LE);
  const tlvs = p.subarray(Math.min(p.length, 4 + align4(origLen)));
  const text = findAttr(decodeAttrs(tlvs), NLMSGERR_ATTR_MSG);
  return text ? { errno: err, message: attrString(text) } : { errno: err };
}

// ---------------------------------------------------------------- the socket

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const NETLINK_GENERIC = 16;
const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const EAGAIN = 11;
const EINTR = 4;
const RECV_BUFFER = 65536;
/** The kernel answers at once; this only bounds a broken exchange. */
const REPLY_TIMEOUT_MS = 15_000;

interface Pending {
  replies: GenlMessage[];
  resolve: (r: GenlMessage[]) => void;
  reject: (e: Error) => void;
  what: string;
  timer: NodeJS.Timeout;
}

function u32Bytes(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, LE);
  return b;
}

/**
 * A non-blocking generic netlink socket. Replies and multicast messages are read
 * when libuv says the fd is readable, so the event loop never waits on the kernel.
 */
export class GenlSocket {
  readonly fd: number;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly pending = new Map<number, Pending>();
  private readonly buf = new Uint8Array(RECV_BUFFER);
  private readonly poll: { stop(): void; close(): void; unref(): void };
  private closed = false;
  /** Called with every message the kernel sends unasked (multicast). */
  onMulticast: ((m: GenlMessage) => void) | undefined;

  constructor() {
    let fd: number;
    try {
      fd = check(libc().socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_GENERIC), 'netlink socket');
    } catch (err) {
      throw err instanceof NbdLinuxError ? err : new NbdLinuxError(String(err), 'ENOSYS');
    }
    this.fd = fd;
    // Short errors (no echoed request) with the kernel's text when it has one.
    libc().setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, u32Bytes(1), 4);
    libc().setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, u32Bytes(1), 4);
    this.poll = pollReadable(fd, () => this.drain());
  }

  /** Joins a multicast group (messages go to `onMulticast`). */
  join(groupId: number): void {
    check(libc().setsockopt(this.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, u32Bytes(groupId), 4), 'netlink join group');
  }

  /** Lets the process exit while only this socket is open (a passive listener). */
  unref(): void {
    this.poll.unref();
  }

  /** Sends a request and resolves with every reply message once the kernel ACKs. */
  request(family: number, cmd: number, version: number, attrs: readonly AttrSpec[], what: string, dump = false): Promise<GenlMessage[]> {
    if (this.closed) return Promise.reject(new NbdLinuxError(`${what}: netlink socket closed`, 'EBADF'));
    this.seq = (this.seq + 1) >>> 0 || 1;
    const seq = this.seq;
    const flags = NlmFlag.REQUEST | NlmFlag.ACK | (dump ? NlmFlag.DUMP : 0);
    const bytes = encodeGenlRequest({ family, cmd, version, flags, seq, attrs });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new NbdLinuxError(`${what}: no netlink reply within ${REPLY_TIMEOUT_MS} ms`, 'ETIMEDOUT'));
      }, REPLY_TIMEOUT_MS);
      this.pending.set(seq, { replies: [], resolve, reject, what, timer });
      const n = libc().send(this.fd, bytes, bytes.length, 0);
      if (n < 0) {
        const e = errno();
        clearTimeout(timer);
        this.pending.delete(seq);
        reject(NbdLinuxError.fromErrno(e, what));
      }
    });
  }

  private drain(): void {
    while (!this.closed) {
      const n = libc().recv(this.fd, this.buf, this.buf.length, 0);
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e !== EAGAIN) this.failAll(NbdLinuxError.fromErrno(e, 'netlink recv'));
        return;
      }
      let messages: NlMessage[];
      try {
        messages = decodeMessages(this.buf.slice(0, n));
      } catch (err) {
        this.failAll(err as Error);
        return;
      }
      for (const m of messages) this.dispatch(m);
    }
  }

  private dispatch(m: NlMessage): void {
    const p = this.pending.get(m.seq);
    if (!p) {
      if (m.type !== Nlmsg.ERROR && m.type !== Nlmsg.DONE && m.type !== Nlmsg.NOOP && this.onMulticast) {
        try {
          this.onMulticast(decodeGenl(m.payload));
        } catch {
          // a malformed multicast message is dropped, not fatal
        }
      }
      return;
    }
    const finish = (err?: Error) => {
      clearTimeout(p.timer);
      this.pending.delete(m.seq);
      if (err) p.reject(err);
      else p.resolve(p.replies);
    };
    try {
      if (m.type === Nlmsg.ERROR) {
        const { errno: e, message } = decodeError(m);
        if (e === 0) finish();
        else finish(NbdLinuxError.fromErrno(e, p.what, message));
      } else if (m.type === Nlmsg.DONE) {
        finish();
      } else if (m.type !== Nlmsg.NOOP) {
        p.replies.push(decodeGenl(m.payload));
      }
    } catch (err) {
      finish(err as Error);
    }
  }

  private failAll(err: Error): void {
    for (const [seq, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(seq);
      p.reject(err);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poll.stop();
    this.poll.close();
    this.failAll(new NbdLinuxError('netlink socket closed', 'EBADF'));
    closeFd(this.fd);
  }
}

/** A generic netlink family: its id and multicast groups by name. */
export interface Family {
  id: number;
  groups: Map<string, number>;
}

/** Looks a family up through nlctrl; a missing one is an ENOENT with a modprobe hint. */
export async function resolveFamily(sock: GenlSocket, name: string): Promise<Family> {
  let replies: GenlMessage[];
  try {
    replies = await sock.request(GENL_ID_CTRL, Ctrl.CMD_GETFAMILY, 2, [{ type: Ctrl.ATTR_FAMILY_NAME, string: name }], `netlink family "${name}"`);
  } catch (err) {
    if (err instanceof NbdLinuxError && err.code === 'ENOENT') {
      throw new NbdLinuxError(
        `generic netlink family "${name}" is missing: the nbd module is not loaded (modprobe nbd) or the kernel predates netlink NBD (use mode: 'ioctl')`,
        'ENOENT',
        2,
      );
    }
    throw err;
  }
  const attrs = replies[0]?.attrs ?? [];
  const id = findAttr(attrs, Ctrl.ATTR_FAMILY_ID);
  if (!id) throw new NbdLinuxError(`netlink family "${name}": reply without a family id`, 'EPROTO');
  const groups = new Map<string, number>();
  const list = findAttr(attrs, Ctrl.ATTR_MCAST_GROUPS);
  for (const g of list ? decodeAttrs(list.data) : []) {
    const ga = decodeAttrs(g.data);
    const gn = findAttr(ga, Ctrl.ATTR_MCAST_GRP_NAME);
    const gid = findAttr(ga, Ctrl.ATTR_MCAST_GRP_ID);
    if (gn && gid) groups.set(attrString(gn), attrU32(gid));
  }
  return { id: attrU16(id), groups };
}

// ---------------------------------------------------------------- NBD commands

/** What NBD_CMD_CONNECT needs; timeouts are in seconds. */
export interface ConnectParams {
  index?: number;
  size: number;
  blockSize?: number;
  serverFlags: number;
  clientFlags?: number;
  timeout?: number;
  deadConnTimeout?: number;
  backend?: string;
  fds: readonly number[];
}

const socketsAttr = (fds: readonly number[]): AttrSpec => ({
  type: NbdAttr.SOCKETS,
  nested: fds.map((fd) => ({ type: NbdSockAttr.ITEM, nested: [{ type: NbdSockAttr.FD, u32: fd }] })),
});

/** The attributes of a CONNECT request (pure, for tests). */
export function connectAttrs(p: ConnectParams): AttrSpec[] {
  const a: AttrSpec[] = [];
  if (p.index !== undefined) a.push({ type: NbdAttr.INDEX, u32: p.index });
  a.push({ type: NbdAttr.SIZE_BYTES, u64: p.size });
  if (p.blockSize !== undefined) a.push({ type: NbdAttr.BLOCK_SIZE_BYTES, u64: p.blockSize });
  // Always sent: without them the kernel never sends FLUSH/TRIM and ignores READ_ONLY.
  a.push({ type: NbdAttr.SERVER_FLAGS, u64: p.serverFlags });
  if (p.clientFlags) a.push({ type: NbdAttr.CLIENT_FLAGS, u64: p.clientFlags });
  if (p.timeout !== undefined) a.push({ type: NbdAttr.TIMEOUT, u64: p.timeout });
  if (p.deadConnTimeout !== undefined) a.push({ type: NbdAttr.DEAD_CONN_TIMEOUT, u64: p.deadConnTimeout });
  if (p.backend !== undefined) a.push({ type: NbdAttr.BACKEND_IDENTIFIER, string: p.backend });
  a.push(socketsAttr(p.fds));
  return a;
}

/** What NBD_CMD_RECONFIGURE may change. */
export interface ReconfigureParams {
  fds?: readonly number[];
  timeout?: number;
  deadConnTimeout?: number;
  clientFlags?: number;
}

export function reconfigureAttrs(index: number, p: ReconfigureParams): AttrSpec[] {
  const a: AttrSpec[] = [{ type: NbdAttr.INDEX, u32: index }];
  if (p.timeout !== undefined) a.push({ type: NbdAttr.TIMEOUT, u64: p.timeout });
  if (p.deadConnTimeout !== undefined) a.push({ type: NbdAttr.DEAD_CONN_TIMEOUT, u64: p.deadConnTimeout });
  if (p.clientFlags !== undefined) a.push({ type: NbdAttr.CLIENT_FLAGS, u64: p.clientFlags });
  if (p.fds?.length) a.push(socketsAttr(p.fds));
  return a;
}

/** One entry of a STATUS reply. */
export interface DeviceStatus {
  index: number;
  connected: boolean;
}

/** Decodes the DEVICE_LIST of a STATUS reply. */
export function decodeStatus(attrs: readonly Attr[]): DeviceStatus[] {
  const list = findAttr(attrs, NbdAttr.DEVICE_LIST);
  if (!list) return [];
  return decodeAttrs(list.data)
    .filter((item) => item.type === NbdDeviceAttr.ITEM)
    .flatMap((item) => {
      const ia = decodeAttrs(item.data);
      const idx = findAttr(ia, NbdDeviceAttr.INDEX);
      const con = findAttr(ia, NbdDeviceAttr.CONNECTED);
      return idx ? [{ index: attrU32(idx), connected: con ? attrU8(con) !== 0 : false }] : [];
    });
}

/** A netlink socket bound to the nbd family, for one or a few commands. */
export class NbdNetlink {
  private constructor(
    readonly sock: GenlSocket,
    readonly family: Family,
  ) {}

  static async open(): Promise<NbdNetlink> {
    const sock = new GenlSocket();
    try {
      return new NbdNetlink(sock, await resolveFamily(sock, NBD_FAMILY));
    } catch (err) {
      sock.close();
      throw err;
    }
  }

  private cmd(cmd: number, attrs: readonly AttrSpec[], what: string): Promise<GenlMessage[]> {
    return this.sock.request(this.family.id, cmd, NBD_GENL_VERSION, attrs, what);
  }

  /** NBD_CMD_CONNECT; resolves with the device index the kernel used. */
  async connect(p: ConnectParams): Promise<number> {
    const what = `netlink NBD connect${p.index === undefined ? '' : ` /dev/nbd${p.index}`}`;
    const replies = await this.cmd(NbdCmd.CONNECT, connectAttrs(p), what);
    const idx = replies.map((r) => findAttr(r.attrs, NbdAttr.INDEX)).find((a) => a !== undefined);
    if (idx) return attrU32(idx);
    if (p.index !== undefined) return p.index;
    throw new NbdLinuxError(`${what}: the kernel did not say which device it used`, 'EPROTO');
  }

  async disconnect(index: number): Promise<void> {
    await this.cmd(NbdCmd.DISCONNECT, [{ type: NbdAttr.INDEX, u32: index }], `netlink NBD disconnect /dev/nbd${index}`);
  }

  async reconfigure(index: number, p: ReconfigureParams): Promise<void> {
    await this.cmd(NbdCmd.RECONFIGURE, reconfigureAttrs(index, p), `netlink NBD reconfigure /dev/nbd${index}`);
  }

  async status(index?: number): Promise<DeviceStatus[]> {
    const attrs: AttrSpec[] = index === undefined ? [] : [{ type: NbdAttr.INDEX, u32: index }];
    const replies = await this.cmd(NbdCmd.STATUS, attrs, 'netlink NBD status');
    return replies.flatMap((r) => decodeStatus(r.attrs));
  }

  /** Subscribes to LINK_DEAD: `onDead(index)` whenever a device loses a connection. */
  watchLinkDead(onDead: (index: number) => void): void {
    const group = this.family.groups.get(NBD_MCAST_GROUP);
    if (group === undefined) throw new NbdLinuxError(`netlink family "nbd" has no "${NBD_MCAST_GROUP}" group`, 'ENOENT');
    this.sock.join(group);
    this.sock.onMulticast = (m) => {
      if (m.cmd !== NbdCmd.LINK_DEAD) return;
      const idx = findAttr(m.attrs, NbdAttr.INDEX);
      if (idx) onDead(attrU32(idx));
    };
  }

  close(): void {
    this.sock.close();
  }
}
