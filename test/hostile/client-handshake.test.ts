// The hostile-input table, part 3: our client against hostile servers during the
// handshake. Each row: what the server sends, what the spec requires or allows the client
// to do, and what we do; after every row this process lives, a bystander connection to a
// well-behaved server still writes and reads back, and RSS stays bounded.

import { Client } from '@nbd/client';
import { encodeOptionReply, NbdError, NbdOptionError, NbdTimeoutError, Option, OptionReply, ProtocolError } from '@nbd/protocol';
import { expect } from 'vitest';
import {
  afterFirstOption,
  answeringGo,
  clientTable,
  connectTo,
  expectProtocolError,
  measured,
  rawReplyHeader,
  rejection,
  serve,
  streamingReplies,
  u8,
} from './client-support.js';
import { type HostileCase, MiB } from './support.js';

/**
 * A call against a server streaming replies forever: it must fail with a ProtocolError
 * matching `rule` well within the handshake limit (4 s, so a regression cannot eat
 * memory for long), and this process's RSS must not grow by more than `maxMiB` meanwhile.
 */
async function boundedStream(
  call: (c: Client) => Promise<unknown>,
  script: Parameters<typeof connectTo>[0],
  rule: RegExp,
  maxMiB: number,
  o: Parameters<typeof connectTo>[1] = {},
): Promise<void> {
  const client = await connectTo(script, { handshakeTimeout: 4000, ...o });
  const { value: err, grew, ms } = await measured(() => rejection(call(client)));
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as Error).message).toMatch(rule);
  expect(client.state).toBe('closed');
  expect(ms).toBeLessThan(3000);
  expect(grew / MiB).toBeLessThan(maxMiB);
}

const serverReply = (name: string, description: string) => (o: number) => encodeOptionReply(o, { kind: 'server', name, description });

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
  {
    sends: 'NBD_REP_SERVER replies of 8 KiB each, forever, in answer to NBD_OPT_LIST (issue 19: 513 MiB in 1.3 s)',
    spec: 'no limit on how many replies precede the final one; a client may bound what it keeps',
    we: 'client error',
    run: () =>
      boundedStream(
        (c) => c.list(),
        streamingReplies((o) => o === Option.LIST, serverReply('x'.repeat(4096), 'd'.repeat(4092))),
        /NBD_OPT_LIST: the server's replies passed 33554432 bytes before its final one \(maxOptionReplyBytes\)/,
        128,
      ),
  },
  {
    sends: 'NBD_REP_SERVER replies of 1-byte names, forever, in answer to NBD_OPT_LIST',
    spec: 'as above',
    we: 'client error',
    run: () =>
      boundedStream(
        (c) => c.list(),
        streamingReplies((o) => o === Option.LIST, serverReply('a', '')),
        /NBD_OPT_LIST: the server sent more than 100000 replies before its final one \(maxOptionReplies\)/,
        128,
      ),
  },
  {
    sends: 'NBD_REP_META_CONTEXT replies, forever, in answer to NBD_OPT_LIST_META_CONTEXT (client limit: 1000 replies)',
    spec: 'as above',
    we: 'client error',
    run: () =>
      boundedStream(
        (c) => c.listMetaContexts('', []),
        streamingReplies(
          (o) => o === Option.LIST_META_CONTEXT,
          (o) => encodeOptionReply(o, { kind: 'meta-context', id: 1, name: 'base:allocation' }),
        ),
        /NBD_OPT_LIST_META_CONTEXT: the server sent more than 1000 replies/,
        64,
        { maxOptionReplies: 1000 },
      ),
  },
  {
    sends: 'NBD_REP_INFO (NBD_INFO_NAME of 4 KiB) replies, forever, in answer to NBD_OPT_GO (client limit: 1 MiB)',
    spec: 'as above',
    we: 'client error',
    run: () =>
      boundedStream(
        (c) => c.go(''),
        streamingReplies(
          (o) => o === Option.GO,
          (o) => encodeOptionReply(o, { kind: 'info', info: { kind: 'name', name: 'n'.repeat(4096) } }),
        ),
        /NBD_OPT_GO: the server's replies passed 1048576 bytes/,
        64,
        { maxOptionReplyBytes: MiB },
      ),
  },
  {
    sends: 'NBD_REP_ACK to NBD_OPT_LIST, then NBD_REP_SERVER replies forever while the client sends nothing',
    spec: 'the server replies only to options: unasked bytes break the protocol',
    we: 'client error',
    run: async () => {
      const srv = await serve(streamingReplies((o) => o === Option.LIST, serverReply('x'.repeat(4096), ''), { ackFirst: true }));
      const client = await Client.connect(srv.uri, { handshakeTimeout: 4000 });
      const { grew } = await measured(async () => {
        expect(await client.list()).toEqual([]);
        // Idle between calls: the client hangs up once 64 KiB came unasked (the server's script ends on the close).
        await Promise.race([srv.done, new Promise((_, reject) => setTimeout(() => reject(new Error('still streaming after 2 s')), 2000))]);
      });
      expect(grew / MiB).toBeLessThan(32);
      await expectProtocolError(client.info(''), /sent over 65536 bytes while nothing was asked of it/);
      expect(client.state).toBe('closed');
    },
  },
];

clientTable('hostile servers vs our client: handshake', cases);
