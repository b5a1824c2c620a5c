// The hostile-input table, part 4: our client against hostile servers in transmission
// (structured replies and extended headers): every reply rule of strict mode, stalls and
// closes. Each row: what the server sends, what the spec requires or allows, what we do;
// after every row a bystander connection still works and RSS stays bounded.

import { ChunkType, Errno, encodeChunk, NbdClosedError, NbdErrnoError, ProtocolError } from '@nbd/protocol';
import { expect } from 'vitest';
import { clientTable, expectProtocolError, measured, transmitting, u8 } from './client-support.js';
import type { HostileCase } from './support.js';
import { MiB } from './support.js';

/** 1-byte OFFSET_DATA chunks (not DONE) at `offset + at` for each `at`, the byte being `at & 0xff`, back to back in one buffer. */
function oneByteChunks(cookie: bigint, offset: bigint, order: readonly number[]): Uint8Array {
  const one = encodeChunk(cookie, { kind: 'offset-data', offset, data: u8(0) }, { done: false, extended: false });
  const out = Buffer.alloc(one.length * order.length);
  order.forEach((at, i) => {
    const base = i * one.length;
    out.set(one, base);
    out.writeBigUInt64BE(offset + BigInt(at), base + one.length - 9);
    out[base + one.length - 1] = at & 0xff;
  });
  return out;
}

/** Chunks of one reply, encoded back to back (one write). */
const chunks = (cookie: bigint, payloads: Parameters<typeof encodeChunk>[1][]): Uint8Array =>
  Buffer.concat(payloads.map((c) => encodeChunk(cookie, c, { done: false, extended: false })));

const cases: HostileCase<void>[] = [
  {
    sends: 'a reply for a cookie never sent',
    spec: 'the reply cannot be matched: the client hard-disconnects; requests in flight fail',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        await p.request();
        p.simple(0xabcdn);
      });
      await expectProtocolError(conn.flush(), /cookie/);
      expect(conn.state).toBe('failed');
    },
  },
  {
    sends: 'a structured chunk claiming 4 GiB - 1 of payload',
    spec: 'a length no request can need: hard disconnect (never allocated)',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        const h = Buffer.alloc(20);
        h.writeUInt32BE(0x668e33ef, 0);
        h.writeUInt16BE(1, 4);
        h.writeUInt16BE(ChunkType.OFFSET_DATA, 6);
        h.writeBigUInt64BE(r.cookie, 8);
        h.writeUInt32BE(0xffffffff, 16);
        p.send(h);
      });
      const before = process.memoryUsage().arrayBuffers;
      await expectProtocolError(conn.read(0, 4096), /exceeds the limit/);
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * MiB);
    },
  },
  {
    sends: 'READ data at an offset outside the request',
    spec: 'content chunks MUST lie within the request',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset + 8192n, data: new Uint8Array(16) });
      });
      await expectProtocolError(conn.read(0, 4096), /outside the request/);
    },
  },
  {
    sends: 'READ answered by half its data, then DONE',
    spec: 'a successful READ reply MUST cover the whole request',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(2048) }, false);
        p.chunk(r.cookie, { kind: 'none' });
      });
      await expectProtocolError(conn.read(0, 4096), /not described/);
    },
  },
  {
    sends: 'READ answered by two chunks that overlap',
    spec: 'content chunks MUST NOT overlap',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(3000) }, false);
        p.chunk(r.cookie, { kind: 'offset-hole', offset: r.offset + 2000n, size: 2096 });
      });
      await expectProtocolError(conn.read(0, 4096), /overlaps/);
    },
  },
  {
    sends: 'a simple reply to READ after structured replies were negotiated',
    spec: 'the server MUST then answer READ with structured replies',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.simple(r.cookie, 0, new Uint8Array(4096));
      });
      await expectProtocolError(conn.read(0, 4096), /simple reply to NBD_CMD_READ/);
    },
  },
  {
    sends: 'a structured chunk when structured replies were refused',
    spec: 'the server MUST NOT send structured replies unless negotiated',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(
        async (p) => {
          const r = await p.request();
          p.chunk(r.cookie, { kind: 'none' });
        },
        { structured: false },
      );
      await expect(conn.flush()).rejects.toBeInstanceOf(ProtocolError);
    },
  },
  {
    sends: 'a NONE chunk without the DONE flag',
    spec: 'NONE MUST be the final chunk (DONE set)',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'none' }, false);
      });
      await expectProtocolError(conn.flush(), /NONE chunk without the DONE flag/);
    },
  },
  {
    sends: 'an ERROR chunk whose error value is 0',
    spec: 'the error value of an error chunk MUST be nonzero',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'error', error: 0, message: 'no error' });
      });
      await expectProtocolError(conn.flush(), /error value 0/);
    },
  },
  {
    sends: 'an ERROR chunk whose message is 5000 bytes',
    spec: 'an error message MUST NOT exceed the 4096-byte string limit',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, {
          kind: 'unknown',
          code: ChunkType.ERROR,
          data: Uint8Array.of(0, 0, 0, 5, 0x13, 0x88, ...new Uint8Array(5000).fill(0x78)),
        });
      });
      await expectProtocolError(conn.flush(), /MUST NOT exceed the 4096-byte/);
    },
  },
  {
    sends: 'a chunk without DONE for a WRITE, then a simple reply to it',
    spec: 'a structured reply ends with its chunk flagged NBD_REPLY_FLAG_DONE',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'error', error: Errno.EIO, message: 'first' }, false);
        p.simple(r.cookie, 0);
      });
      await expectProtocolError(conn.write(new Uint8Array(512), 0), /after chunks of a structured reply/);
    },
  },
  {
    sends: 'an unknown chunk type 77 (error bit clear)',
    spec: 'a client MUST hard-disconnect on an unknown non-error chunk type',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'unknown', code: 77, data: u8(1, 2, 3) });
      });
      await expectProtocolError(conn.flush(), /unknown reply chunk type 0x4d/);
    },
  },
  {
    sends: 'an unknown error chunk type 0x8077 with a sane error and message',
    spec: 'an unknown chunk type with bit 15 set marks the request failed; the connection goes on',
    we: 'errno reply',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'unknown', code: 0x8077, data: u8(0, 0, 0, 5, 0, 2, 0x68, 0x69) });
        const r2 = await p.request();
        p.chunk(r2.cookie, { kind: 'none' });
      });
      await expect(conn.flush()).rejects.toMatchObject({ errno: Errno.EIO });
      await conn.flush();
    },
  },
  {
    sends: 'an error reply with errno 9999 (not in the spec)',
    spec: 'a client SHOULD treat unknown error values as EINVAL',
    we: 'errno reply',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.simple(r.cookie, 9999);
      });
      const e = await conn.flush().catch((err: unknown) => err);
      expect(e).toBeInstanceOf(NbdErrnoError);
      expect((e as NbdErrnoError).errno).toBe(Errno.EINVAL);
    },
  },
  {
    sends: 'BLOCK_STATUS with an extent of length 0',
    spec: 'extent lengths MUST be nonzero',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'block-status', contextId: 1, extents: [{ length: 0n, flags: 0 }] });
      });
      await expectProtocolError(conn.blockStatus(0, 4096), /length 0/);
    },
  },
  {
    sends: 'BLOCK_STATUS for context id 9, which was never selected',
    spec: 'the server sends one status chunk per context asked about, no others',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'block-status', contextId: 9, extents: [{ length: 4096n, flags: 0 }] });
      });
      await expectProtocolError(conn.blockStatus(0, 4096), /context id 9/);
    },
  },
  {
    sends: 'BLOCK_STATUS with REQ_ONE answered by two extents',
    spec: 'with REQ_ONE the server MUST send exactly one extent',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, {
          kind: 'block-status',
          contextId: 1,
          extents: [
            { length: 1024n, flags: 0 },
            { length: 1024n, flags: 3 },
          ],
        });
      });
      await expectProtocolError(conn.blockStatus(0, 4096, { reqOne: true }), /REQ_ONE/);
    },
  },
  {
    sends: 'ERROR_OFFSET at an offset outside the request',
    spec: 'the offset of ERROR_OFFSET MUST lie within the request',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'error-offset', error: Errno.EIO, message: 'bad sector', offset: r.offset + 100_000n });
      });
      await expectProtocolError(conn.read(0, 4096), /outside the request/);
    },
  },
  {
    sends: "an extended chunk echoing another offset than the request's",
    spec: 'extended reply chunks MUST carry the offset of the request they answer',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(
        async (p) => {
          const r = await p.request();
          p.chunk(r.cookie, { kind: 'none' }, true, r.offset + 512n);
        },
        { extended: true },
      );
      await expectProtocolError(conn.zero(4096, 4096), /does not match the request/);
    },
  },
  {
    sends: 'a compact structured chunk after extended headers were negotiated',
    spec: 'every reply MUST then be an extended chunk',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(
        async (p) => {
          const r = await p.request();
          p.send(encodeChunk(r.cookie, { kind: 'none' }, { extended: false }));
        },
        { extended: true },
      );
      await expect(conn.flush()).rejects.toBeInstanceOf(ProtocolError);
    },
  },
  {
    sends: 'ESHUTDOWN to a request',
    spec: 'a client receiving ESHUTDOWN MUST soft-disconnect',
    we: 'errno reply',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        p.simple(r.cookie, Errno.ESHUTDOWN);
        await p.frame().catch(() => undefined); // DISC
      });
      await expect(conn.flush()).rejects.toMatchObject({ errno: Errno.ESHUTDOWN });
      await expect.poll(() => conn.state).toMatch(/closing|closed|draining/);
    },
  },
  {
    sends: 'a READ reply header, then a close before its data',
    spec: 'the connection is gone: requests in flight fail, nothing hangs',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        const whole = encodeChunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(4096) });
        p.send(whole.subarray(0, 40));
        await new Promise((res) => setTimeout(res, 20));
        p.socket.destroy();
      });
      const e = await conn.read(0, 4096).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(NbdClosedError);
    },
  },
  {
    sends: 'no reply at all to a READ (the server stalls)',
    spec: 'the spec sets no time limit; the caller bounds it (AbortSignal.timeout), and the connection goes on',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(async (p) => {
        await p.request(); // never answered
        const r2 = await p.request();
        p.chunk(r2.cookie, { kind: 'none' });
      });
      await expect(conn.read(0, 4096, { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED' });
      await conn.flush();
      expect(conn.state).toBe('transmitting');
    },
  },
  {
    sends:
      'a 256 KiB READ answered by 1-byte chunks at every other byte, last first (131 072 separate ranges), then the bytes between, then DONE',
    spec: 'chunks may come in any order and in any number (none may overlap; together they cover the request)',
    we: 'client error',
    run: async () => {
      const length = 256 * 1024;
      const conn = await transmitting(async (p) => {
        const r = await p.request();
        const order = [
          ...Array.from({ length: length / 2 }, (_, i) => length - 2 - 2 * i),
          ...Array.from({ length: length / 2 }, (_, i) => 2 * i + 1),
        ];
        p.send(oneByteChunks(r.cookie, r.offset, order));
        p.chunk(r.cookie, { kind: 'none' });
      });
      // Checking each chunk against the ranges so far cost a splice of all of them (quadratic: seconds of CPU, then success).
      const { value: err, ms } = await measured(() => conn.read(0, length).catch((e: unknown) => e));
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toMatch(/more than 16384 separate ranges described at once/);
      expect(ms).toBeLessThan(1500);
    },
  },
  {
    sends: 'a 1 MiB READ (strict: false) answered by 10 000 hole chunks over the whole request, then DONE',
    spec: 'content chunks MUST NOT overlap (relaxed mode merges overlaps; each hole zeroes its range again)',
    we: 'client error',
    run: async () => {
      const conn = await transmitting(
        async (p) => {
          const r = await p.request();
          p.send(
            chunks(
              r.cookie,
              Array.from({ length: 10_000 }, () => ({ kind: 'offset-hole' as const, offset: r.offset, size: MiB })),
            ),
          );
          p.chunk(r.cookie, { kind: 'none' });
        },
        { strict: false },
      );
      // 32 bytes on the wire each, 1 MiB of zeroing each: 10 GB of memset, then success.
      const { value: err, ms } = await measured(() => conn.read(0, MiB).catch((e: unknown) => e));
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toMatch(/hole chunks described 3145728 bytes of a 1048576-byte request/);
      expect(ms).toBeLessThan(1500);
    },
  },
];

clientTable('hostile servers vs our client: transmission', cases);
