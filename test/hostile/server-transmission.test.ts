// The hostile-input table, part 2: hostile clients against our server in transmission
// (compact and extended headers). Each row: what the client sends, what the spec
// requires or allows, and what we do; after every row the server process is alive, a
// well-behaved client is still served, and the server's RSS stays under a bound.

import { Command, CommandFlag, Errno, encodeBlockStatusPayload, encodeRequest, type Request, type ServerFrame } from '@nbd/protocol';
import { afterAll, beforeAll, expect } from 'vitest';
import { type HostileCase, MiB, type RawClient, ServerChild, serverTable, transmission } from './support.js';

let srv: ServerChild;
beforeAll(async () => {
  srv = await ServerChild.start({ maxInFlight: 64, maxInFlightBytes: 8 * MiB });
});
afterAll(async () => {
  await srv?.stop();
});

const req = (r: Partial<Request> & { type: number }, extended = false): Uint8Array =>
  encodeRequest({ flags: 0, cookie: 1n, offset: 0n, length: 0n, ...r }, extended);

/** The errno of the reply to `cookie` (simple reply or error chunk), or 0 for success. */
function errnoOf(f: ServerFrame | null): number | 'closed' {
  if (f === null) return 'closed';
  if (f.kind === 'simple-reply') return f.error;
  if (f.kind === 'chunk' && (f.header.type & 0x8000) !== 0) return new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0);
  return 0;
}

/** Sends `bytes`, expects `errno` for cookie 1, then checks the stream is still in sync (a READ answers). */
async function expectErrno(c: RawClient, bytes: Uint8Array, errno: number, extended = false): Promise<void> {
  c.write(bytes);
  const f = await c.frame();
  expect(errnoOf(f)).toBe(errno);
  await inSync(c, extended);
}

async function inSync(c: RawClient, extended = false): Promise<void> {
  c.decoder.readLength = (cookie) => (cookie === 99n ? 512 : undefined);
  c.write(req({ type: Command.READ, cookie: 99n, length: 512n }, extended));
  for (let f = await c.frame(); ; f = await c.frame()) {
    expect(f).not.toBeNull();
    const cookie = f!.kind === 'chunk' ? f!.header.cookie : f!.kind === 'simple-reply' ? f!.cookie : -1n;
    if (cookie === 99n) break;
  }
  c.close();
}

const tx = (o: Parameters<typeof transmission>[1] = {}) => transmission(srv.socket, o);

const cases: HostileCase<void>[] = [
  {
    sends: 'a request with a bad magic (0xdeadbeef)',
    spec: 'a stream that cannot be framed is a protocol violation: the server closes (hard disconnect)',
    we: 'closed',
    run: async () => {
      const c = await tx();
      const b = req({ type: Command.READ, length: 512n });
      new DataView(b.buffer).setUint32(0, 0xdeadbeef);
      c.write(b);
      expect(await c.frame()).toBeNull();
    },
  },
  {
    sends: 'an extended request (magic 0x21e41c71) without extended headers negotiated',
    spec: 'extended requests MUST NOT be sent unless negotiated; the stream cannot be framed: close',
    we: 'closed',
    run: async () => {
      const c = await tx({ structured: true });
      c.write(req({ type: Command.READ, length: 512n }, true));
      expect(await c.frame()).toBeNull();
    },
  },
  {
    sends: 'two compact requests after extended headers were negotiated',
    spec: 'every request MUST then use the extended header; read as 32-byte headers they have a bad magic: close',
    we: 'closed',
    run: async () => {
      const c = await tx({ extended: true });
      c.write(Buffer.concat([req({ type: Command.READ, length: 512n }), req({ type: Command.READ, length: 512n })]));
      expect(await c.frame()).toBeNull();
    },
  },
  {
    sends: 'unknown command 99',
    spec: 'the server SHOULD reply EINVAL to an unknown command and go on',
    we: 'errno reply',
    run: async () => expectErrno(await tx(), req({ type: 99, length: 512n }), Errno.EINVAL),
  },
  {
    sends: 'READ with unknown command flags (0x8000)',
    spec: 'unknown flags: the server SHOULD reply EINVAL',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ structured: true }), req({ type: Command.READ, flags: 0x8000, length: 512n }), Errno.EINVAL),
  },
  {
    sends: 'READ of 512 bytes at 8 MiB (past the end of an 8 MiB export)',
    spec: 'reads past the end: the server SHOULD reply EINVAL',
    we: 'errno reply',
    run: async () => expectErrno(await tx(), req({ type: Command.READ, offset: BigInt(8 * MiB), length: 512n }), Errno.EINVAL),
  },
  {
    sends: 'READ at offset 2^64 - 256 for 512 bytes (offset + length wraps)',
    spec: 'out of range: EINVAL (the range must not wrap into a valid one)',
    we: 'errno reply',
    run: async () =>
      expectErrno(await tx({ structured: true }), req({ type: Command.READ, offset: 2n ** 64n - 256n, length: 512n }), Errno.EINVAL),
  },
  {
    sends: 'WRITE of 4 KiB past the end, payload sent',
    spec: 'writes past the end: the server SHOULD reply ENOSPC; the payload is still read',
    we: 'errno reply',
    run: async () => {
      const c = await tx();
      await expectErrno(
        c,
        Buffer.concat([req({ type: Command.WRITE, offset: BigInt(8 * MiB), length: 4096n }), new Uint8Array(4096)]),
        Errno.ENOSPC,
      );
    },
  },
  {
    sends: 'WRITE claiming 64 MiB (over the 32 MiB maximum payload), all of it sent',
    spec: 'payloads over the advertised maximum MAY be refused (EINVAL, not EOVERFLOW: it carries a payload); the server must then read the payload to stay in sync',
    we: 'errno reply',
    run: async () => {
      const c = await tx();
      const big = 64 * MiB;
      c.write(req({ type: Command.WRITE, length: BigInt(big) }));
      for (let i = 0; i < 64; i++) c.write(new Uint8Array(MiB));
      expect(errnoOf(await c.frame(20_000))).toBe(Errno.EINVAL);
      await inSync(c);
    },
  },
  {
    sends: 'READ of 64 MiB (over the maximum payload)',
    spec: 'the server MAY refuse a request over its maximum payload (EOVERFLOW or EINVAL) rather than answer it',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ structured: true }), req({ type: Command.READ, length: BigInt(64 * MiB) }), Errno.EOVERFLOW),
  },
  {
    sends: 'READ of length 0',
    spec: 'unspecified by the spec; we refuse it (EINVAL) rather than guess',
    we: 'errno reply',
    run: async () => expectErrno(await tx(), req({ type: Command.READ, length: 0n }), Errno.EINVAL),
  },
  {
    sends: 'WRITE to a read-only export',
    spec: 'the server MUST reply EPERM to writes on a read-only export',
    we: 'errno reply',
    run: async () => {
      const c = await tx({ name: 'ro' });
      await expectErrno(c, Buffer.concat([req({ type: Command.WRITE, length: 512n }), new Uint8Array(512)]), Errno.EPERM);
    },
  },
  {
    sends: 'TRIM on a read-only export',
    spec: 'EPERM, as any write',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ name: 'ro' }), req({ type: Command.TRIM, length: 512n }), Errno.EPERM),
  },
  {
    sends: 'FLUSH on an export that did not advertise SEND_FLUSH',
    spec: 'a client MUST NOT send it; the server SHOULD reply EINVAL',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ name: 'bare' }), req({ type: Command.FLUSH }), Errno.EINVAL),
  },
  {
    sends: 'WRITE with FUA where FUA was not advertised',
    spec: 'flags not advertised: EINVAL',
    we: 'errno reply',
    run: async () => {
      const c = await tx({ name: 'bare' });
      await expectErrno(
        c,
        Buffer.concat([req({ type: Command.WRITE, flags: CommandFlag.FUA, length: 512n }), new Uint8Array(512)]),
        Errno.EINVAL,
      );
    },
  },
  {
    sends: 'BLOCK_STATUS without any meta context selected',
    spec: 'the client MUST NOT send it; the server SHOULD reply EINVAL',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ structured: true }), req({ type: Command.BLOCK_STATUS, length: 4096n }), Errno.EINVAL),
  },
  {
    sends: 'READ with the DF flag before structured replies',
    spec: 'SEND_DF MUST NOT be advertised without structured replies, so DF is not allowed: EINVAL',
    we: 'errno reply',
    run: async () => expectErrno(await tx(), req({ type: Command.READ, flags: CommandFlag.DF, length: 512n }), Errno.EINVAL),
  },
  {
    sends: 'an extended READ of 2^40 bytes',
    spec: 'over the maximum payload: the server MAY refuse (EOVERFLOW)',
    we: 'errno reply',
    run: async () => expectErrno(await tx({ extended: true }), req({ type: Command.READ, length: 2n ** 40n }, true), Errno.EOVERFLOW, true),
  },
  {
    sends: 'an extended WRITE claiming 2^62 bytes of payload',
    spec: 'a payload that large cannot be read to stay in sync; the server may only close',
    we: 'closed',
    run: async () => {
      const c = await tx({ extended: true });
      c.write(req({ type: Command.WRITE, flags: CommandFlag.PAYLOAD_LEN, length: 2n ** 62n }, true));
      expect(await c.frame()).toBeNull();
    },
  },
  {
    sends: 'an extended BLOCK_STATUS whose payload names context id 77, never selected',
    spec: 'context ids not selected: EINVAL',
    we: 'errno reply',
    run: async () => {
      const c = await tx({ extended: true, meta: true });
      const payload = encodeBlockStatusPayload({ effectLength: 4096n, contextIds: [77] });
      const bytes = Buffer.concat([
        req({ type: Command.BLOCK_STATUS, flags: CommandFlag.PAYLOAD_LEN, length: BigInt(payload.length) }, true),
        payload,
      ]);
      await expectErrno(c, bytes, Errno.EINVAL, true);
    },
  },
  {
    sends: 'an extended BLOCK_STATUS with a 6-byte payload (shorter than its effect length field)',
    spec: 'a malformed payload: EINVAL, the payload read',
    we: 'errno reply',
    run: async () => {
      const c = await tx({ extended: true, meta: true });
      await expectErrno(
        c,
        Buffer.concat([req({ type: Command.BLOCK_STATUS, flags: CommandFlag.PAYLOAD_LEN, length: 6n }, true), new Uint8Array(6)]),
        Errno.EINVAL,
        true,
      );
    },
  },
  {
    sends: 'two READs in flight with the same cookie',
    spec: 'cookies are opaque to the server (a client SHOULD NOT reuse one in flight); both get replies',
    we: 'accepted',
    run: async () => {
      const c = await tx({ structured: true });
      c.write(
        Buffer.concat([req({ type: Command.READ, cookie: 7n, length: 512n }), req({ type: Command.READ, cookie: 7n, length: 512n })]),
      );
      expect(await c.frame()).toMatchObject({ kind: 'chunk', header: { cookie: 7n } });
      expect(await c.frame()).toMatchObject({ kind: 'chunk', header: { cookie: 7n } });
      await inSync(c);
    },
  },
  {
    sends: 'READ, then DISC, then another READ in the same write',
    spec: 'after DISC the server finishes what is in flight and closes; later requests get no reply',
    we: 'no reply',
    run: async () => {
      const c = await tx({ structured: true });
      c.write(
        Buffer.concat([
          req({ type: Command.READ, cookie: 1n, length: 512n }),
          req({ type: Command.DISC, cookie: 2n }),
          req({ type: Command.READ, cookie: 3n, length: 512n }),
        ]),
      );
      expect(await c.frame()).toMatchObject({ kind: 'chunk', header: { cookie: 1n } });
      expect(await c.frame()).toBeNull();
    },
  },
  {
    sends: 'a WRITE header and half its payload, then EOF',
    spec: 'the client may go away at any time; nothing is written from a partial payload',
    we: 'closed',
    run: async () => {
      const c = await tx();
      c.write(req({ type: Command.WRITE, offset: BigInt(6 * MiB), length: 65536n }));
      c.write(new Uint8Array(32768).fill(0xee));
      c.sock.end();
      expect(await c.frame()).toBeNull();
      const check = await tx();
      check.decoder.readLength = () => 512;
      check.write(req({ type: Command.READ, cookie: 5n, offset: BigInt(6 * MiB), length: 512n }));
      const f = await check.frame();
      expect(f?.kind === 'simple-reply' && f.data?.every((b) => b === 0)).toBe(true);
      check.close();
    },
  },
  {
    sends: '2,000 READs pipelined in one write',
    spec: 'requests may be pipelined without limit; the server answers each (reading pauses at its in-flight cap)',
    we: 'accepted',
    run: async () => {
      const c = await tx({ structured: true });
      c.write(Buffer.concat(Array.from({ length: 2000 }, (_, i) => req({ type: Command.READ, cookie: BigInt(i + 1000), length: 512n }))));
      const seen = new Set<bigint>();
      while (seen.size < 2000) {
        const f = await c.frame();
        expect(f?.kind).toBe('chunk');
        if (f?.kind === 'chunk') seen.add(f.header.cookie);
      }
      c.close();
    },
  },
];

serverTable('hostile clients vs our server: transmission', cases, () => srv, 100);
