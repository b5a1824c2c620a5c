// The hostile-input table, part 1: hostile clients against our server during the
// handshake. Each row: what the client sends, what the spec (doc/proto.md, with the
// extended-headers extension) requires or allows, and what we do. After every row the
// server process is alive, a well-behaved client is still served (write + verified
// read), and the server's RSS stays under a bound.

import { ClientFlag, Info, Option, OptionReply } from '@nbd/protocol';
import { afterAll, beforeAll, expect } from 'vitest';
import { finalType, type HostileCase, handshake, option, RawClient, rawOption, replies, ServerChild, serverTable } from './support.js';

let srv: ServerChild;
beforeAll(async () => {
  srv = await ServerChild.start({ handshakeTimeout: 1500 });
});
afterAll(async () => {
  await srv?.stop();
});

const FIXED = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
const utf8 = (s: string) => new TextEncoder().encode(s);
/** INFO/GO data: u32 name length | name | u16 count | requests. */
function goData(name: Uint8Array, requests: number[] = [], claimedNameLength = name.length, claimedCount = requests.length): Uint8Array {
  const b = new Uint8Array(4 + name.length + 2 + 2 * requests.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, claimedNameLength);
  b.set(name, 4);
  v.setUint16(4 + name.length, claimedCount);
  requests.forEach((r, i) => v.setUint16(6 + name.length + 2 * i, r));
  return b;
}
async function expectClosed(c: RawClient, ms = 5000): Promise<void> {
  expect(await c.waitClosed(ms)).toBe(true);
}
async function expectOption(c: RawClient, bytes: Uint8Array, type: number): Promise<void> {
  c.write(bytes);
  expect(finalType(await replies(c))).toBe(type >>> 0);
  // The option loop goes on: a following GO still works.
  expect(finalType(await option(c, { kind: 'go', name: 'mem', requests: [] }))).toBe(OptionReply.ACK);
  c.close();
}

const cases: HostileCase<void>[] = [
  {
    sends: 'client flags with unknown bits (0xfffffffc)',
    spec: 'a server MUST drop the connection on client flags it does not know',
    we: 'closed',
    run: async () => expectClosed(await handshake(srv.socket, 0xfffffffc | FIXED)),
  },
  {
    sends: 'no FIXED_NEWSTYLE in the client flags, then NBD_OPT_GO',
    spec: 'a non-fixed-newstyle client may only send EXPORT_NAME; it cannot parse option replies, so the server may only close',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket, 0);
      c.write(rawOption(Option.GO, goData(utf8('mem'))));
      await expectClosed(c);
    },
  },
  {
    sends: 'an HTTP request instead of an option',
    spec: 'a bad option magic is a protocol violation: hard disconnect',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      c.write(utf8('GET / HTTP/1.1\r\nHost: nbd\r\n\r\n'));
      await expectClosed(c);
    },
  },
  {
    sends: 'an option header claiming 4 GiB - 1 of data (and none sent)',
    spec: 'no limit is set by the spec; a server need not buffer what a peer merely claims',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      c.write(rawOption(Option.GO, new Uint8Array(0), 0xffffffff));
      await expectClosed(c);
    },
  },
  {
    sends: 'an option of 64 KiB + 1 bytes, all of it sent',
    spec: 'strings are at most 4096 bytes; no option needs more than a few KiB',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      c.write(rawOption(Option.LIST, new Uint8Array(64 * 1024 + 1)));
      await expectClosed(c);
    },
  },
  {
    sends: 'an unknown option 0xdeadbeef with 100 bytes of data',
    spec: 'the server MUST reply NBD_REP_ERR_UNSUP and keep parsing options (baseline requirement)',
    we: 'option error',
    run: async () => expectOption(await handshake(srv.socket), rawOption(0xdeadbeef, new Uint8Array(100)), OptionReply.ERR_UNSUP),
  },
  {
    sends: 'NBD_OPT_LIST with 8 bytes of data',
    spec: 'LIST carries no data; the server MUST reply NBD_REP_ERR_INVALID',
    we: 'option error',
    run: async () => expectOption(await handshake(srv.socket), rawOption(Option.LIST, new Uint8Array(8)), OptionReply.ERR_INVALID),
  },
  {
    sends: 'NBD_OPT_GO whose name length (1000) exceeds the option data',
    spec: 'name length MUST be ≤ data length - 6; a malformed option gets NBD_REP_ERR_INVALID',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.GO, goData(utf8('mem'), [], 1000)), OptionReply.ERR_INVALID),
  },
  {
    sends: 'NBD_OPT_INFO claiming 65,535 info requests with none present',
    spec: 'a malformed option gets NBD_REP_ERR_INVALID; nothing is allocated for the claimed count',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.INFO, goData(utf8('mem'), [], 3, 0xffff)), OptionReply.ERR_INVALID),
  },
  {
    sends: 'NBD_OPT_GO with an export name that is not UTF-8 (0xff 0xfe)',
    spec: 'names are UTF-8 strings; an undecodable one is malformed: NBD_REP_ERR_INVALID',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.GO, goData(new Uint8Array([0xff, 0xfe]))), OptionReply.ERR_INVALID),
  },
  {
    sends: 'NBD_OPT_GO with a 5000-byte export name',
    spec: 'strings MUST be no longer than 4096 bytes: NBD_REP_ERR_INVALID',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.GO, goData(new Uint8Array(5000).fill(0x61))), OptionReply.ERR_INVALID),
  },
  {
    sends: 'NBD_OPT_GO for an unknown export whose name is 4096 bytes (2048 × "é")',
    spec: 'a 4096-byte name is allowed: NBD_REP_ERR_UNKNOWN, whose message (quoting it) must itself stay within 4096 bytes',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.GO, goData(utf8('é'.repeat(2048)))), OptionReply.ERR_UNKNOWN),
  },
  {
    sends: 'NBD_OPT_INFO for an export that does not exist',
    spec: 'NBD_REP_ERR_UNKNOWN',
    we: 'option error',
    run: async () =>
      expectOption(await handshake(srv.socket), rawOption(Option.INFO, goData(utf8('nosuch'), [Info.NAME])), OptionReply.ERR_UNKNOWN),
  },
  {
    sends: 'NBD_OPT_SET_META_CONTEXT before structured replies were negotiated',
    spec: 'meta contexts need structured replies: the server MUST reply NBD_REP_ERR_INVALID',
    we: 'option error',
    run: async () => {
      const c = await handshake(srv.socket);
      expect(finalType(await option(c, { kind: 'set-meta-context', name: 'mem', queries: ['base:allocation'] }))).toBe(
        OptionReply.ERR_INVALID,
      );
      c.close();
    },
  },
  {
    sends: 'NBD_OPT_LIST_META_CONTEXT claiming 2^32 - 1 queries in 12 bytes',
    spec: 'malformed: NBD_REP_ERR_INVALID (each query takes at least 4 bytes, so the count is a lie)',
    we: 'option error',
    run: async () => {
      const data = new Uint8Array(4 + 3 + 4);
      const v = new DataView(data.buffer);
      v.setUint32(0, 3);
      data.set(utf8('mem'), 4);
      v.setUint32(7, 0xffffffff);
      const c = await handshake(srv.socket);
      expect(finalType(await option(c, { kind: 'structured-reply' }))).toBe(OptionReply.ACK);
      await expectOption(c, rawOption(Option.LIST_META_CONTEXT, data), OptionReply.ERR_INVALID);
    },
  },
  {
    sends: 'NBD_OPT_STARTTLS to a server without TLS',
    spec: 'NOTLS mode: NBD_REP_ERR_POLICY (or ERR_UNSUP), and negotiation goes on in the clear',
    we: 'option error',
    run: async () => expectOption(await handshake(srv.socket), rawOption(Option.STARTTLS, new Uint8Array(0)), OptionReply.ERR_POLICY),
  },
  {
    sends: 'NBD_OPT_STRUCTURED_REPLY twice',
    spec: 'the server MAY reply NBD_REP_ERR_INVALID to a repeat',
    we: 'option error',
    run: async () => {
      const c = await handshake(srv.socket);
      expect(finalType(await option(c, { kind: 'structured-reply' }))).toBe(OptionReply.ACK);
      await expectOption(c, rawOption(Option.STRUCTURED_REPLY, new Uint8Array(0)), OptionReply.ERR_INVALID);
    },
  },
  {
    sends: '1,100 NBD_OPT_LIST options in one write',
    spec: 'no limit in the spec; a server may drop a client that never ends the handshake',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      const one = rawOption(Option.LIST, new Uint8Array(0));
      c.write(Buffer.concat(Array.from({ length: 1100 }, () => one)));
      await expectClosed(c);
    },
  },
  {
    sends: 'NBD_OPT_EXPORT_NAME for an unknown export',
    spec: 'EXPORT_NAME has no error reply: a server that refuses it MUST close the connection',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      c.write(rawOption(Option.EXPORT_NAME, utf8('nosuch')));
      await expectClosed(c);
    },
  },
  {
    sends: 'NBD_OPT_EXPORT_NAME after NBD_OPT_EXTENDED_HEADERS was acknowledged',
    spec: 'EXPORT_NAME is forbidden once extended headers are negotiated; the server can only close',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      expect(finalType(await option(c, { kind: 'extended-headers' }))).toBe(OptionReply.ACK);
      c.write(rawOption(Option.EXPORT_NAME, utf8('mem')));
      await expectClosed(c);
    },
  },
  {
    sends: 'nothing at all after connecting',
    spec: 'the spec sets no limit; servers bound the handshake (qemu-nbd --handshake-limit, nbdkit --timeout)',
    we: 'closed',
    run: async () => {
      const c = await RawClient.connect(srv.socket);
      const t0 = Date.now();
      await expectClosed(c, 6000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1200);
    },
  },
  {
    sends: 'a GO option one byte every 100 ms (slowloris)',
    spec: 'as above: the handshake limit covers every option, however slowly it arrives',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      const bytes = rawOption(Option.GO, goData(utf8('mem')));
      const t0 = Date.now();
      for (let i = 0; i < bytes.length && !c.closed; i++) {
        c.write(bytes.subarray(i, i + 1));
        await new Promise((r) => setTimeout(r, 100));
      }
      await expectClosed(c);
      expect(Date.now() - t0).toBeLessThan(4000);
    },
  },
  {
    sends: 'half of an option header, then EOF',
    spec: 'a client may disconnect at any time; the server cleans up',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      c.write(rawOption(Option.GO, goData(utf8('mem'))).subarray(0, 9));
      c.sock.end();
      await expectClosed(c);
    },
  },
  {
    sends: 'the IHAVEOPT magic with a bad byte (IHAVEOPU)',
    spec: 'a bad option magic is a protocol violation: hard disconnect',
    we: 'closed',
    run: async () => {
      const c = await handshake(srv.socket);
      const b = rawOption(Option.LIST, new Uint8Array(0));
      b[7] = 0x55;
      c.write(b);
      await expectClosed(c);
    },
  },
];

serverTable('hostile clients vs our server: handshake', cases, () => srv);
