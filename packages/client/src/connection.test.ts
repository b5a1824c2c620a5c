import { Command, CommandFlag, Errno, NbdInvalidArgumentError, ProtocolError, TransmissionFlag } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { RW_FLAGS, scopedFakeServers } from '../test/fake-server.js';
import { Client } from './client.js';
import { open } from './multi.js';

const serve = scopedFakeServers();
const bytes = (...v: number[]) => new Uint8Array(v);

describe('Connection: replies', () => {
  test('out-of-order structured replies are matched by cookie', async () => {
    const order: number[] = [];
    const srv = await serve(async (p) => {
      await p.negotiate();
      const reqs = [await p.request(), await p.request(), await p.request()];
      for (const r of [...reqs].reverse()) {
        order.push(Number(r.offset));
        p.chunk(r.cookie, {
          kind: 'offset-data',
          offset: r.offset,
          data: new Uint8Array(Number(r.length)).fill(Number(r.offset) / 512 + 1),
        });
      }
    });
    const conn = await open(srv.uri);
    const [a, b, c] = await Promise.all([conn.read(0, 512), conn.read(512, 512), conn.read(1024, 512)]);
    expect(order).toEqual([1024, 512, 0]); // the server really answered backwards
    expect([a[0], b[0], c[0]]).toEqual([1, 2, 3]);
    expect(a.length).toBe(512);
    await srv.done;
  });

  test('interleaved chunks of two reads, OFFSET_HOLE reads as zeroes', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r1 = await p.request();
      const r2 = await p.request();
      p.chunk(r1.cookie, { kind: 'offset-data', offset: r1.offset, data: bytes(1, 2, 3, 4) }, false);
      p.chunk(r2.cookie, { kind: 'offset-data', offset: r2.offset, data: bytes(9, 9, 9, 9, 9, 9, 9, 9) });
      p.chunk(r1.cookie, { kind: 'offset-hole', offset: r1.offset + 4n, size: 4 });
    });
    const conn = await open(srv.uri);
    const into = new Uint8Array(8).fill(0xff);
    const [, b] = await Promise.all([conn.readInto(into, 0), conn.read(8, 8)]);
    expect([...into]).toEqual([1, 2, 3, 4, 0, 0, 0, 0]);
    expect([...b]).toEqual([9, 9, 9, 9, 9, 9, 9, 9]);
  });

  test('ERROR_OFFSET rejects that read with NbdError(errno, message); others succeed', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r1 = await p.request();
      const r2 = await p.request();
      p.chunk(r1.cookie, { kind: 'error-offset', error: Errno.EIO, message: 'bad sector', offset: 4096n });
      p.chunk(r2.cookie, { kind: 'offset-data', offset: r2.offset, data: new Uint8Array(16).fill(7) });
    });
    const conn = await open(srv.uri);
    const r1 = conn.read(0, 8192);
    const r2 = conn.read(8192, 16);
    await expect(r1).rejects.toMatchObject({
      name: 'NbdErrnoError',
      errno: Errno.EIO,
      errnoName: 'EIO',
      code: 'NBD_ERR_ERRNO',
      offset: 4096,
    });
    await expect(r1).rejects.toThrow(/bad sector/);
    expect((await r2)[0]).toBe(7);
  });

  test('a short read (chunks not covering the range): a ProtocolError when strict, EIO for that read when not', async () => {
    for (const strict of [true, false]) {
      const srv = await serve(async (p) => {
        await p.negotiate();
        const r = await p.request();
        p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: bytes(1, 2) });
        const again = await p.request();
        p.chunk(again.cookie, { kind: 'offset-data', offset: again.offset, data: bytes(3, 4) });
      });
      const conn = await open(srv.uri, { strict });
      if (strict) {
        await expect(conn.read(0, 4)).rejects.toThrow(/2 of 4 bytes not described.*MUST cover the whole request/);
        expect(conn.state).toBe('failed');
      } else {
        await expect(conn.read(0, 4)).rejects.toMatchObject({ errno: Errno.EIO });
        expect([...(await conn.read(0, 2))]).toEqual([3, 4]); // the connection goes on
      }
    }
  });

  test('simple replies when structured replies are refused (read, write, error)', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ structured: false });
      const r = await p.request();
      const w = await p.request();
      const bad = await p.request();
      expect(r.type).toBe(Command.READ);
      expect(w.type).toBe(Command.WRITE);
      expect([...w.payload!]).toEqual([5, 6]);
      p.simple(w.cookie);
      p.simple(bad.cookie, Errno.ENOSPC);
      p.simple(r.cookie, 0, bytes(1, 2, 3));
    });
    const conn = await open(srv.uri);
    expect(conn.structuredReplies).toBe(false);
    const results = await Promise.allSettled([conn.read(0, 3), conn.write(bytes(5, 6), 10), conn.write(bytes(1), 20)]);
    expect(results[0].status === 'fulfilled' && [...results[0].value]).toEqual([1, 2, 3]);
    expect(results[1]).toMatchObject({ status: 'fulfilled' });
    expect(results[2]).toMatchObject({ status: 'rejected', reason: { errno: Errno.ENOSPC } });
  });

  test('block status per context, offsets accumulated', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ contexts: { 'base:allocation': 7, 'qemu:dirty-bitmap:b': 9 } });
      const r = await p.request();
      expect(r.type).toBe(Command.BLOCK_STATUS);
      p.chunk(r.cookie, { kind: 'block-status', contextId: 9, extents: [{ length: 65536n, flags: 1 }] }, false);
      p.chunk(r.cookie, {
        kind: 'block-status',
        contextId: 7,
        extents: [
          { length: 4096n, flags: 0 },
          { length: 8192n, flags: 3 },
        ],
      });
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { metaContexts: ['base:allocation', 'qemu:dirty-bitmap:b'] });
    const m = await conn.blockStatus(4096, 65536);
    expect(m.get('base:allocation')).toEqual([
      { offset: 4096, length: 4096, flags: 0 },
      { offset: 8192, length: 8192, flags: 3 },
    ]);
    expect(m.get('qemu:dirty-bitmap:b')).toEqual([{ offset: 4096, length: 65536, flags: 1 }]);
  });
});

describe('Connection: failures', () => {
  test('a dropped connection rejects every pending call with the cause', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      await p.request();
      await p.request();
      await p.request();
      p.socket.destroy();
    });
    const conn = await open(srv.uri);
    const calls = [conn.read(0, 512), conn.write(new Uint8Array(512), 0), conn.flush()];
    for (const c of calls) await expect(c).rejects.toThrow(/closed the connection/);
    await expect(conn.read(0, 1)).rejects.toThrow(/closed the connection/);
  });

  test('malformed server input is a ProtocolError and rejects all pending', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      await p.request();
      await p.request();
      p.send(new Uint8Array(32).fill(0xab)); // bad magic
    });
    const conn = await open(srv.uri);
    const a = conn.read(0, 512);
    const b = conn.read(512, 512);
    await expect(a).rejects.toBeInstanceOf(ProtocolError);
    await expect(b).rejects.toBeInstanceOf(ProtocolError);
    expect(conn.error).toBeInstanceOf(ProtocolError);
  });

  test('a reply for an unknown cookie is a ProtocolError', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      await p.request();
      p.chunk(999n, { kind: 'none' });
    });
    const conn = await open(srv.uri);
    await expect(conn.flush()).rejects.toThrow(/unknown cookie 999/);
  });

  test('ESHUTDOWN rejects that request, refuses new ones, and disconnects softly', async () => {
    let sawDisc = false;
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r = await p.request();
      p.chunk(r.cookie, { kind: 'error', error: Errno.ESHUTDOWN, message: 'going away' });
      const d = await p.request();
      sawDisc = d.type === Command.DISC;
    });
    const conn = await open(srv.uri);
    await expect(conn.read(0, 8)).rejects.toMatchObject({ errno: Errno.ESHUTDOWN });
    await expect(conn.read(0, 8)).rejects.toMatchObject({ errno: Errno.ESHUTDOWN });
    await srv.done;
    expect(sawDisc).toBe(true);
  });

  test('an aborted call rejects locally; its late reply is discarded; the connection goes on', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r1 = await p.request();
      const r2 = await p.request();
      await new Promise((r) => setTimeout(r, 50));
      p.chunk(r1.cookie, { kind: 'offset-data', offset: r1.offset, data: bytes(1, 1) });
      p.chunk(r2.cookie, { kind: 'offset-data', offset: r2.offset, data: bytes(2, 2) });
    });
    const conn = await open(srv.uri);
    const ac = new AbortController();
    const r1 = conn.read(0, 2, { signal: ac.signal });
    const r2 = conn.read(2, 2);
    ac.abort(new Error('user gave up'));
    await expect(r1).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED', cause: new Error('user gave up') });
    expect([...(await r2)]).toEqual([2, 2]);
    expect(conn.inFlight).toBe(0);
    await expect(conn.read(0, 2, { signal: AbortSignal.abort() })).rejects.toThrow();
  });
});

describe('Connection: local checks and splitting', () => {
  test('unadvertised commands and read-only writes are refused without a request', async () => {
    let requests = 0;
    const srv = await serve(async (p) => {
      await p.negotiate({ flags: TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY });
      p.socket.on('data', () => requests++);
    });
    const conn = await open(srv.uri);
    expect(conn.info.is.readOnly).toBe(true);
    await expect(conn.write(bytes(1), 0)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/read-only/),
    });
    await expect(conn.trim(0, 512)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/read-only/),
    });
    await expect(conn.flush()).rejects.toThrow(/SEND_FLUSH/);
    await expect(conn.cache(0, 512)).rejects.toThrow(/SEND_CACHE/);
    await expect(conn.read(-1, 1)).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(conn.read(0, 1.5)).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(conn.read(1 << 20, 1)).rejects.toThrow(/beyond the end/);
    await expect(conn.blockStatus(0, 512)).rejects.toThrow(/no metadata context/);
    await new Promise((r) => setTimeout(r, 20));
    expect(requests).toBe(0);
  });

  test('block sizes: misaligned requests refused locally, large ones split at the maximum', async () => {
    const seen: { type: number; offset: number; length: number }[] = [];
    const srv = await serve(async (p) => {
      await p.negotiate({ blockSize: { min: 512, preferred: 4096, max: 65536 } });
      for (;;) {
        const r = await p.request().catch(() => undefined);
        if (!r || r.type === Command.DISC) return;
        seen.push({ type: r.type, offset: Number(r.offset), length: Number(r.length) });
        if (r.type === Command.READ)
          p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(Number(r.length)).fill(Number(r.offset) >> 16) });
        else p.chunk(r.cookie, { kind: 'none' });
      }
    });
    const conn = await open(srv.uri);
    expect(conn.info.blockSizes).toEqual({ min: 512, preferred: 4096, max: 65536 });
    await expect(conn.read(100, 512)).rejects.toThrow(/aligned/);
    await expect(conn.write(new Uint8Array(100), 0)).rejects.toThrow(/aligned/);
    const data = await conn.read(0, 3 * 65536 + 512);
    expect(data.length).toBe(3 * 65536 + 512);
    expect([data[0], data[65536], data[131072], data[196608]]).toEqual([0, 1, 2, 3]);
    await conn.write(new Uint8Array(131072), 65536);
    await conn.zero(0, 262144);
    await conn.disconnect();
    const reads = seen.filter((s) => s.type === Command.READ);
    expect(reads.map((s) => s.length)).toEqual([65536, 65536, 65536, 512]);
    expect(seen.filter((s) => s.type === Command.WRITE).map((s) => [s.offset, s.length])).toEqual([
      [65536, 65536],
      [131072, 65536],
    ]);
    expect(seen.filter((s) => s.type === Command.WRITE_ZEROES)).toHaveLength(4);
  });
});

describe('Connection: extended headers', () => {
  test('32-byte requests, PAYLOAD_LEN writes, extended chunks and BLOCK_STATUS_EXT', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ extended: true, contexts: { 'base:allocation': 1 } });
      const w = await p.request();
      expect(p.decoder.extended).toBe(true);
      expect(w.type).toBe(Command.WRITE);
      expect(w.flags & CommandFlag.PAYLOAD_LEN).toBe(CommandFlag.PAYLOAD_LEN);
      expect([...w.payload!]).toEqual([4, 5, 6]);
      p.chunk(w.cookie, { kind: 'none' }, true, w.offset);
      const r = await p.request();
      p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: bytes(4, 5, 6) }, true, r.offset);
      const b = await p.request();
      p.chunk(b.cookie, { kind: 'block-status-ext', contextId: 1, extents: [{ length: 1n << 19n, flags: 3 }] }, true, b.offset);
      const d = await p.request();
      expect(d.type).toBe(Command.DISC);
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { extendedHeaders: true, metaContexts: ['base:allocation'] });
    expect(conn.extendedHeaders).toBe(true);
    await conn.write(bytes(4, 5, 6), 100);
    expect([...(await conn.read(100, 3))]).toEqual([4, 5, 6]);
    const m = await conn.blockStatus(0, 1 << 20);
    expect(m.get('base:allocation')).toEqual([{ offset: 0, length: 1 << 19, flags: 3 }]);
    await conn.disconnect();
    await srv.done;
  });

  test('TRIM, WRITE_ZEROES and CACHE go out whole with a 64-bit length (compact headers split them)', async () => {
    const GiB = 2 ** 30;
    const seen: { type: number; length: bigint }[] = [];
    const script = (extended: boolean) => async (p: Parameters<Parameters<typeof serve>[0]>[0]) => {
      await p.negotiate({
        extended,
        size: BigInt(8 * GiB),
        flags: RW_FLAGS | TransmissionFlag.SEND_CACHE,
        blockSize: { min: 512, preferred: 4096, max: 1 << 20 },
      });
      for (;;) {
        const r = await p.request().catch(() => undefined);
        if (!r || r.type === Command.DISC) return;
        seen.push({ type: r.type, length: r.length });
        p.chunk(r.cookie, { kind: 'none' }, true, r.offset);
      }
    };
    for (const extended of [true, false]) {
      seen.length = 0;
      const srv = await serve(script(extended));
      const client = await Client.connect(srv.uri);
      const conn = await client.go('', { extendedHeaders: extended });
      expect(conn.extendedHeaders).toBe(extended);
      await conn.trim(GiB, 5 * GiB);
      await conn.zero(0, 6 * GiB, { noHole: true });
      await conn.cache(0, 4 * GiB + 512);
      await conn.disconnect();
      const lengths = (type: number) => seen.filter((x) => x.type === type).map((x) => x.length);
      if (extended) {
        expect([lengths(Command.TRIM), lengths(Command.WRITE_ZEROES), lengths(Command.CACHE)]).toEqual([
          [BigInt(5 * GiB)],
          [BigInt(6 * GiB)],
          [BigInt(4 * GiB + 512)],
        ]);
      } else {
        expect(lengths(Command.TRIM)).toHaveLength(5 * 1024);
        expect(lengths(Command.TRIM).every((n) => n === 1n << 20n)).toBe(true);
      }
    }
  });

  test('extended headers refused: falls back to structured replies', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ extended: false });
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { extendedHeaders: true });
    expect(conn.extendedHeaders).toBe(false);
    expect(conn.structuredReplies).toBe(true);
  });
});

describe('Connection: detach', () => {
  test('detach hands the socket over untouched when idle', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ structured: false });
      const r = await p.request();
      p.simple(r.cookie);
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { structuredReplies: false });
    const f = conn.flush();
    expect(() => conn.detach()).toThrow(/in flight/);
    await f;
    const { socket, info } = conn.detach();
    expect(info.size).toBe(1 << 20);
    expect(socket.destroyed).toBe(false);
    await expect(conn.read(0, 1)).rejects.toThrow(/detached/);
    socket.destroy();
  });
});
