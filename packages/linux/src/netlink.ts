// The NBD commands over generic netlink: CONNECT, DISCONNECT, RECONFIGURE, STATUS,
// and LINK_DEAD notifications.
import { NbdSystemError } from '@nbd/node';
import { type Family, GenlSocket, resolveFamily } from './genl-socket.js';
import {
  type Attr,
  type AttrSpec,
  attrU8,
  attrU32,
  decodeAttrs,
  findAttr,
  type GenlMessage,
  NBD_FAMILY,
  NBD_GENL_VERSION,
  NBD_MCAST_GROUP,
  NbdAttr,
  NbdCmd,
  NbdDeviceAttr,
  NbdSockAttr,
} from './netlink-codec.js';

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
  /** The device's backend identifier: the kernel refuses RECONFIGURE without it once CONNECT set one ("must specify backend"). */
  backend?: string;
}

export function reconfigureAttrs(index: number, p: ReconfigureParams): AttrSpec[] {
  const a: AttrSpec[] = [{ type: NbdAttr.INDEX, u32: index }];
  if (p.timeout !== undefined) a.push({ type: NbdAttr.TIMEOUT, u64: p.timeout });
  if (p.deadConnTimeout !== undefined) a.push({ type: NbdAttr.DEAD_CONN_TIMEOUT, u64: p.deadConnTimeout });
  if (p.clientFlags !== undefined) a.push({ type: NbdAttr.CLIENT_FLAGS, u64: p.clientFlags });
  if (p.backend !== undefined) a.push({ type: NbdAttr.BACKEND_IDENTIFIER, string: p.backend });
  if (p.fds?.length) a.push(socketsAttr(p.fds));
  return a;
}

/** One entry of a STATUS reply. */
export interface DeviceStatus {
  /** N of /dev/nbdN. */
  index: number;
  /** Whether the device is attached to a server now (false: free to configure). */
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
    /** The generic netlink socket the commands go through; `close()` closes it. */
    private readonly sock: GenlSocket,
    /** The "nbd" family as the kernel resolved it: its numeric id and multicast groups. */
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
    throw new NbdSystemError(`${what}: the kernel did not say which device it used`, 'EPROTO');
  }

  /** NBD_CMD_DISCONNECT: detaches /dev/nbd<index> from its server (the kernel sends NBD_CMD_DISC and shuts its sockets down). */
  async disconnect(index: number): Promise<void> {
    await this.cmd(NbdCmd.DISCONNECT, [{ type: NbdAttr.INDEX, u32: index }], `netlink NBD disconnect /dev/nbd${index}`);
  }

  /** NBD_CMD_RECONFIGURE: replaces dead connections by `p.fds` and/or changes timeouts and client flags; ENOSPC if none is dead. */
  async reconfigure(index: number, p: ReconfigureParams): Promise<void> {
    await this.cmd(NbdCmd.RECONFIGURE, reconfigureAttrs(index, p), `netlink NBD reconfigure /dev/nbd${index}`);
  }

  /** NBD_CMD_STATUS: every NBD device (or only /dev/nbd<index>), each with whether it is connected. */
  async status(index?: number): Promise<DeviceStatus[]> {
    const attrs: AttrSpec[] = index === undefined ? [] : [{ type: NbdAttr.INDEX, u32: index }];
    const replies = await this.cmd(NbdCmd.STATUS, attrs, 'netlink NBD status');
    return replies.flatMap((r) => decodeStatus(r.attrs));
  }

  /** Subscribes to LINK_DEAD: `onDead(index)` whenever a device loses a connection. */
  watchLinkDead(onDead: (index: number) => void): void {
    const group = this.family.groups.get(NBD_MCAST_GROUP);
    if (group === undefined) throw new NbdSystemError(`netlink family "nbd" has no "${NBD_MCAST_GROUP}" group`, 'ENOENT');
    this.sock.join(group);
    this.sock.onMulticast = (m) => {
      if (m.cmd !== NbdCmd.LINK_DEAD) return;
      const idx = findAttr(m.attrs, NbdAttr.INDEX);
      if (idx) onDead(attrU32(idx));
    };
  }

  /** Closes the netlink socket; a LINK_DEAD watch ends with it. */
  close(): void {
    this.sock.close();
  }
}
