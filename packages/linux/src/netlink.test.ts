import { existsSync } from 'node:fs';
import { NbdSystemError } from '@nbd/node';
import { describe, expect, test } from 'vitest';
import { GenlSocket, resolveFamily } from './genl-socket.js';
import { connectAttrs, decodeStatus, NbdNetlink, reconfigureAttrs } from './netlink.js';
import {
  attrString,
  attrU8,
  attrU16,
  attrU32,
  attrU64,
  Ctrl,
  decodeAttrs,
  decodeError,
  decodeGenl,
  decodeMessages,
  encodeAttrs,
  encodeGenlRequest,
  NbdAttr,
  NlmFlag,
  Nlmsg,
} from './netlink-codec.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

describe('attributes', () => {
  // (name, attribute, bytes): u16 len | u16 type | payload | pad to 4
  const fixtures: [string, Parameters<typeof encodeAttrs>[0][number], string][] = [
    ['u8', { type: 2, u8: 1 }, '0500 0200 01 000000'],
    ['u16', { type: 1, u16: 0x20 }, '0600 0100 2000 0000'],
    ['u32', { type: 1, u32: 5 }, '0800 0100 05000000'],
    ['u64', { type: 2, u64: 64n << 20n }, '0c00 0200 0000000400000000'],
    ['string, NUL, padded', { type: 2, string: 'nbd_mc' }, '0b00 0200 6e62645f6d6300 00'],
    ['string, exact', { type: 10, string: 'abc' }, '0800 0a00 61626300'],
    ['nested', { type: 7, nested: [{ type: 1, nested: [{ type: 1, u32: 3 }] }] }, '1000 0700 0c00 0100 0800 0100 03000000'],
  ];
  for (const [name, attr, wire] of fixtures) {
    test(`${name}: encode`, () => expect(hex(encodeAttrs([attr]))).toBe(wire.replace(/\s+/g, '')));
    test(`${name}: decode`, () => {
      const [a] = decodeAttrs(bytes(wire));
      expect(a?.type).toBe(attr.type);
      if ('u8' in attr) expect(attrU8(a!)).toBe(attr.u8);
      if ('u16' in attr) expect(attrU16(a!)).toBe(attr.u16);
      if ('u32' in attr) expect(attrU32(a!)).toBe(attr.u32);
      if ('u64' in attr) expect(attrU64(a!)).toBe(BigInt(attr.u64));
      if ('string' in attr) expect(attrString(a!)).toBe(attr.string);
      if ('nested' in attr) expect(attrU32(decodeAttrs(decodeAttrs(a!.data)[0]!.data)[0]!)).toBe(3);
    });
  }

  test('several attributes in a row keep their alignment', () => {
    const enc = encodeAttrs([
      { type: 2, string: 'x' },
      { type: 1, u32: 7 },
      { type: 3, u8: 9 },
    ]);
    const dec = decodeAttrs(enc);
    expect(dec.map((a) => a.type)).toEqual([2, 1, 3]);
    expect(attrU32(dec[1]!)).toBe(7);
    expect(attrU8(dec[2]!)).toBe(9);
  });

  test('NLA_F_NESTED and NLA_F_NET_BYTEORDER are stripped from the type', () => {
    expect(decodeAttrs(bytes('0800 0780 01000000'))[0]?.type).toBe(7);
  });

  test('a length beyond the buffer or below the header is a protocol error, not a crash', () => {
    expect(() => decodeAttrs(bytes('ff00 0100 0000'))).toThrow(/bad attribute length/);
    expect(() => decodeAttrs(bytes('0200 0100'))).toThrow(NbdSystemError);
  });

  test('an attribute too short for its type is refused', () => {
    expect(() => attrU64(decodeAttrs(bytes('0800 0100 01000000'))[0]!)).toThrow(/too short/);
  });
});

describe('messages', () => {
  test('generic netlink request header', () => {
    const m = encodeGenlRequest({
      family: 0x20,
      cmd: 5,
      version: 1,
      flags: NlmFlag.REQUEST | NlmFlag.ACK,
      seq: 7,
      attrs: [{ type: 1, u32: 2 }],
    });
    // u32 len | u16 type | u16 flags | u32 seq | u32 pid | u8 cmd | u8 version | u16 0 | attrs
    expect(hex(m)).toBe('1c000000' + '2000' + '0500' + '07000000' + '00000000' + '05' + '01' + '0000' + '0800010002000000');
  });

  test('a datagram with several messages splits; genl body decodes', () => {
    const a = encodeGenlRequest({ family: 0x20, cmd: 1, version: 1, flags: 0, seq: 1, attrs: [{ type: NbdAttr.INDEX, u32: 3 }] });
    const b = encodeGenlRequest({ family: 0x20, cmd: 4, version: 1, flags: 0, seq: 2, attrs: [] });
    const all = new Uint8Array([...a, ...b]);
    const msgs = decodeMessages(all);
    expect(msgs.map((m) => m.seq)).toEqual([1, 2]);
    const g = decodeGenl(msgs[0]!.payload);
    expect(g.cmd).toBe(1);
    expect(attrU32(g.attrs[0]!)).toBe(3);
  });

  test('a truncated message header length is a protocol error', () => {
    expect(() => decodeMessages(bytes('ff000000 0200 0000 01000000 00000000'))).toThrow(/bad message length/);
  });

  const errMsg = (err: number, flags = 0, extra = '') => {
    const p = new Uint8Array(4 + 16 + extra.length / 2);
    new DataView(p.buffer).setInt32(0, err, true);
    new DataView(p.buffer).setUint32(4, 16, true); // the echoed (capped) request header
    p.set(bytes(extra), 20);
    return { type: Nlmsg.ERROR, flags, seq: 1, pid: 0, payload: p };
  };

  test('NLMSG_ERROR 0 is an ACK; -EPERM is errno 1', () => {
    expect(decodeError(errMsg(0)).errno).toBe(0);
    expect(decodeError(errMsg(-1)).errno).toBe(1);
  });

  test('extended ACK carries the kernel text', () => {
    const tlv = hex(encodeAttrs([{ type: 1, string: 'nbd: bad size' }]));
    expect(decodeError(errMsg(-22, NlmFlag.CAPPED | NlmFlag.ACK_TLVS, tlv))).toEqual({ errno: 22, message: 'nbd: bad size' });
  });
});

describe('NBD commands', () => {
  test('CONNECT always carries SERVER_FLAGS, and the sockets nested', () => {
    const a = decodeAttrs(encodeAttrs(connectAttrs({ size: 1 << 20, serverFlags: 0x10d, fds: [11, 12] })));
    expect(a.map((x) => x.type)).toEqual([NbdAttr.SIZE_BYTES, NbdAttr.SERVER_FLAGS, NbdAttr.SOCKETS]);
    expect(attrU64(a[1]!)).toBe(0x10dn);
    const fds = decodeAttrs(a[2]!.data).map((item) => attrU32(decodeAttrs(item.data)[0]!));
    expect(fds).toEqual([11, 12]);
  });

  test('CONNECT with every option', () => {
    const a = connectAttrs({
      index: 3,
      size: 4096,
      blockSize: 512,
      serverFlags: 1,
      clientFlags: 2,
      timeout: 30,
      deadConnTimeout: 60,
      backend: 'x',
      fds: [5],
    });
    expect(a.map((x) => x.type)).toEqual([1, 2, 3, 5, 6, 4, 8, 10, 7]);
  });

  test('RECONFIGURE names the device and only what changes', () => {
    expect(reconfigureAttrs(2, { deadConnTimeout: 9 }).map((x) => x.type)).toEqual([NbdAttr.INDEX, NbdAttr.DEAD_CONN_TIMEOUT]);
    expect(reconfigureAttrs(2, { fds: [4] }).map((x) => x.type)).toEqual([NbdAttr.INDEX, NbdAttr.SOCKETS]);
  });

  test('RECONFIGURE of a device connected with a backend carries it (the kernel: "must specify backend")', () => {
    const a = reconfigureAttrs(2, { fds: [4], backend: 'nbd://server/disk' });
    expect(a.map((x) => x.type)).toEqual([NbdAttr.INDEX, NbdAttr.BACKEND_IDENTIFIER, NbdAttr.SOCKETS]);
    const decoded = decodeAttrs(encodeAttrs(a));
    expect(new TextDecoder().decode(decoded[1]!.data).replace(/\0$/, '')).toBe('nbd://server/disk');
  });

  test('STATUS device list decodes', () => {
    const item = (i: number, c: number) => ({
      type: 1,
      nested: [
        { type: 1, u32: i },
        { type: 2, u8: c },
      ],
    });
    const attrs = decodeAttrs(encodeAttrs([{ type: NbdAttr.DEVICE_LIST, nested: [item(0, 1), item(5, 0)] }]));
    expect(decodeStatus(attrs)).toEqual([
      { index: 0, connected: true },
      { index: 5, connected: false },
    ]);
  });
});

// The host kernel has generic netlink: exercise the real socket against nlctrl.
describe('generic netlink socket (host kernel)', () => {
  test('resolves nlctrl itself through CTRL_CMD_GETFAMILY', async () => {
    const s = new GenlSocket();
    try {
      const f = await resolveFamily(s, 'nlctrl');
      expect(f.id).toBe(0x10);
      expect(f.groups.has('notify')).toBe(true);
    } finally {
      s.close();
    }
  });

  test('an unknown family is ENOENT with a modprobe hint', async () => {
    const s = new GenlSocket();
    try {
      await expect(resolveFamily(s, 'nosuchfam')).rejects.toMatchObject({
        errnoName: 'ENOENT',
        message: expect.stringMatching(/modprobe nbd/),
      });
    } finally {
      s.close();
    }
  });

  test('the nbd family: found when the module is loaded, else a clear error', async () => {
    if (existsSync('/sys/module/nbd')) {
      const nl = await NbdNetlink.open();
      expect(nl.family.groups.has('nbd_mc_group')).toBe(true);
      nl.close();
    } else {
      await expect(NbdNetlink.open()).rejects.toThrow(/"nbd" is missing: the nbd module is not loaded \(modprobe nbd\)/);
    }
  });

  test('a kernel error arrives as NbdSystemError with errno (bad nlctrl command)', async () => {
    const s = new GenlSocket();
    try {
      await expect(s.request(0x10, 0xee, 2, [], 'bogus ctrl command')).rejects.toMatchObject({
        name: 'NbdSystemError',
        errnoName: 'EOPNOTSUPP',
      });
      await expect(s.request(0x10, Ctrl.CMD_GETFAMILY, 2, [], 'getfamily without a name')).rejects.toBeInstanceOf(NbdSystemError);
    } finally {
      s.close();
    }
  });
});
