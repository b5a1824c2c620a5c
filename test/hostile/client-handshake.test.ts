// The hostile-input table, part 3: our client against hostile servers during the
// handshake. Each row: what the server sends, what the spec requires or allows the client
// to do, and what we do; after every row this process lives, a bystander connection to a
// well-behaved server still writes and reads back, and RSS stays bounded.
import { expect } from 'vitest';
import { NbdError, NbdOptionError, NbdTimeoutError, OptionReply, ProtocolError, encodeOptionReply } from '@nbd/protocol';
import type { HostileCase } from './support.js';
import { afterFirstOption, answeringGo, clientTable, connectTo, expectProtocolError, rawReplyHeader, u8 } from './client-support.js';

const cases: HostileCase<void>[] = [
  {
    sends: 'a greeting whose magic is not NBDMAGIC (an HTTP server)',
    spec: 'not an NBD server: the client hard-disconnects',
    we: 'client error',
    run: () =>
      expectProtocolError(
        connectTo(async (p) => p.send(new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n'))),
        /bad magic/,
      ),
  },
  {
    sends: 'NBDMAGIC followed by an unknown style magic',
    spec: 'neither oldstyle nor newstyle: hard disconnect',
    we: 'client error',
    run: async () => {
      const b = Buffer.alloc(18);
      b.write('NBDMAGIC');
      b.writeBigUInt64BE(0x1234n, 8);
      await expectProtocolError(
        connectTo(async (p) => p.send(b)),
        /unknown style magic/,
      );
    },
  },
  {
    sends: 'nothing: accepts and stays silent',
    spec: 'no limit in the spec; clients bound the handshake (qemu --handshake-limit)',
    we: 'client error',
    run: async () => {
      const t0 = Date.now();
      await expect(connectTo(async () => new Promise((r) => setTimeout(r, 3000)), { handshakeTimeout: 400 })).rejects.toBeInstanceOf(
        NbdTimeoutError,
      );
      expect(Date.now() - t0).toBeLessThan(2000);
    },
  },
  {
    sends: 'a close right after accepting',
    spec: 'the client reports the closed connection',
    we: 'client error',
    run: async () => {
      const e = await connectTo(async (p) => void p.socket.destroy()).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(NbdError);
    },
  },
  {
    sends: 'an option reply header claiming 4 GiB - 1 of data',
    spec: 'no reply needs that much; the client need not buffer what a peer claims: hard disconnect',
    we: 'client error',
    run: async () => {
      const client = await connectTo(afterFirstOption((o) => rawReplyHeader(o, OptionReply.SERVER, 0xffffffff)));
      await expectProtocolError(client.list(), /exceeds the limit/);
    },
  },
  {
    sends: 'an option reply with a bad magic',
    spec: 'the stream cannot be framed: hard disconnect',
    we: 'client error',
    run: async () => {
      const client = await connectTo(
        afterFirstOption((o) => {
          const b = rawReplyHeader(o, OptionReply.ACK, 0);
          b[0] = 0x99;
          return b;
        }),
      );
      await expectProtocolError(client.list(), /bad magic/);
    },
  },
  {
    sends: 'an option reply for another option than the one asked',
    spec: 'replies answer the option sent (the client waits for the final reply of one option before the next)',
    we: 'client error',
    run: async () => {
      const client = await connectTo(afterFirstOption(() => encodeOptionReply(9, { kind: 'ack' })));
      await expect(client.list()).rejects.toBeInstanceOf(ProtocolError);
    },
  },
  {
    sends: 'NBD_REP_ACK to GO without any NBD_INFO_EXPORT',
    spec: 'on ACK the server MUST have sent NBD_INFO_EXPORT: a protocol error',
    we: 'client error',
    run: async () => {
      const client = await connectTo(answeringGo((o) => encodeOptionReply(o, { kind: 'ack' })));
      await expectProtocolError(client.go(''), /NBD_INFO_EXPORT/);
    },
  },
  {
    sends: 'NBD_INFO_EXPORT of 13 bytes (one too many)',
    spec: 'NBD_INFO_EXPORT is exactly 12 bytes: malformed',
    we: 'client error',
    run: async () => {
      const client = await connectTo(
        answeringGo((o) => Buffer.concat([rawReplyHeader(o, OptionReply.INFO, 13), u8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 1, 0)])),
      );
      await expectProtocolError(client.go(''), /trailing/);
    },
  },
  {
    sends: 'NBD_REP_ERR_SHUTDOWN to GO',
    spec: 'the client MUST soft-disconnect',
    we: 'client error',
    run: async () => {
      const client = await connectTo(
        answeringGo((o) => encodeOptionReply(o, { kind: 'error', code: OptionReply.ERR_SHUTDOWN, message: 'going down' })),
      );
      await expect(client.go('')).rejects.toBeInstanceOf(NbdOptionError);
      expect(client.state).toBe('closed');
    },
  },
];

clientTable('hostile servers vs our client: handshake', cases);
