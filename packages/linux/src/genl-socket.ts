// A non-blocking generic netlink socket polled on the event loop (it never blocks
// it), and family lookup through nlctrl.
import { NbdSystemError } from '@nbd/node';
import { check, closeFd, errno, libc, pollReadable, SOCK_CLOEXEC, SOCK_NONBLOCK } from '@nbd/node/internal';
import {
  type AttrSpec,
  attrString,
  attrU16,
  attrU32,
  Ctrl,
  decodeAttrs,
  decodeError,
  decodeGenl,
  decodeMessages,
  encodeGenlRequest,
  findAttr,
  GENL_ID_CTRL,
  type GenlMessage,
  LE,
  type NlMessage,
  NlmFlag,
  Nlmsg,
} from './netlink-codec.js';

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
      throw err instanceof NbdSystemError ? err : new NbdSystemError(String(err), 'ENOSYS');
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
    if (this.closed) return Promise.reject(new NbdSystemError(`${what}: netlink socket closed`, 'EBADF'));
    this.seq = (this.seq + 1) >>> 0 || 1;
    const seq = this.seq;
    const flags = NlmFlag.REQUEST | NlmFlag.ACK | (dump ? NlmFlag.DUMP : 0);
    const bytes = encodeGenlRequest({ family, cmd, version, flags, seq, attrs });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new NbdSystemError(`${what}: no netlink reply within ${REPLY_TIMEOUT_MS} ms`, 'ETIMEDOUT'));
      }, REPLY_TIMEOUT_MS);
      this.pending.set(seq, { replies: [], resolve, reject, what, timer });
      const n = libc().send(this.fd, bytes, bytes.length, 0);
      if (n < 0) {
        const e = errno();
        clearTimeout(timer);
        this.pending.delete(seq);
        reject(NbdSystemError.fromErrno(e, what));
      }
    });
  }

  private drain(): void {
    while (!this.closed) {
      const n = libc().recv(this.fd, this.buf, this.buf.length, 0);
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e !== EAGAIN) this.failAll(NbdSystemError.fromErrno(e, 'netlink recv'));
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
        else finish(NbdSystemError.fromErrno(e, p.what, message));
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
    this.failAll(new NbdSystemError('netlink socket closed', 'EBADF'));
    closeFd(this.fd);
  }
}

/** A generic netlink family: its id and multicast groups by name. */
export interface Family {
  /** The numeric id the kernel gave the family (it differs between boots). */
  id: number;
  /** Multicast group ids by name (the nbd family has `nbd_mc_group`, where LINK_DEAD arrives). */
  groups: Map<string, number>;
}

/** Looks a family up through nlctrl; a missing one is an ENOENT with a modprobe hint. */
export async function resolveFamily(sock: GenlSocket, name: string): Promise<Family> {
  let replies: GenlMessage[];
  try {
    replies = await sock.request(
      GENL_ID_CTRL,
      Ctrl.CMD_GETFAMILY,
      2,
      [{ type: Ctrl.ATTR_FAMILY_NAME, string: name }],
      `netlink family "${name}"`,
    );
  } catch (err) {
    if (err instanceof NbdSystemError && err.errnoName === 'ENOENT') {
      throw new NbdSystemError(
        `generic netlink family "${name}" is missing: the nbd module is not loaded (modprobe nbd) or the kernel predates netlink NBD (use mode: 'ioctl')`,
        'ENOENT',
        2,
      );
    }
    throw err;
  }
  const attrs = replies[0]?.attrs ?? [];
  const id = findAttr(attrs, Ctrl.ATTR_FAMILY_ID);
  if (!id) throw new NbdSystemError(`netlink family "${name}": reply without a family id`, 'EPROTO');
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
