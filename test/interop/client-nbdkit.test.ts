// @nbd/client against real nbdkit 1.32 plugins and filters.

import { Client, connectMulti, open } from '@nbd/client';
import { AllocationState, Errno, NbdError, NbdOptionError, NbdUnsupportedError } from '@nbd/protocol';
import { afterEach, describe, expect, test } from 'vitest';
import { type Peer, startNbdkit } from '../support/peers.js';

const MiB = 1024 * 1024;
let peers: Peer[] = [];
afterEach(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  peers = [];
});
async function nbdkit(args: string[], opts: string[] = [], exportName = ''): Promise<Peer> {
  const p = await startNbdkit(args, opts, exportName);
  peers.push(p);
  return p;
}

/** nbdkit's pattern plugin: every 8-byte word holds its own offset, big-endian. */
function checkPattern(data: Uint8Array, offset: number): void {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i + 8 <= data.length; i += 8) {
    if (v.getBigUint64(i) !== BigInt(offset + i)) throw new Error(`pattern mismatch at ${offset + i}`);
  }
}

describe('nbdkit plugins', () => {
  test('memory: write, read back, flush, trim, zero, cache, block status', async () => {
    const p = await nbdkit(['memory', `size=${64 * MiB}`]);
    const c = await Client.connect(p.uri);
    const conn = await c.go('', { metaContexts: ['base:allocation'] });
    expect(conn.info).toMatchObject({ size: 64 * MiB, can: { write: true, flush: true, trim: true, zero: true, multiConn: true } });
    const data = new Uint8Array(3 * MiB).map((_, i) => (i * 7 + 1) & 0xff);
    await conn.write(data, MiB, { fua: conn.info.can.fua });
    expect(Buffer.from(await conn.read(MiB, 3 * MiB)).equals(Buffer.from(data))).toBe(true);
    await conn.flush();
    const map = (await conn.blockStatus(0, 8 * MiB)).get('base:allocation')!;
    const at = (off: number) => map.find((e) => e.offset <= off && off < e.offset + e.length)!.flags;
    expect(at(0) & AllocationState.HOLE).toBe(AllocationState.HOLE);
    expect(at(MiB + 4096)).toBe(0); // written: data
    await conn.zero(MiB, 4096);
    expect([...(await conn.read(MiB, 4096))].every((b) => b === 0)).toBe(true);
    await conn.trim(2 * MiB, MiB);
    if (conn.info.can.cache) await conn.cache(0, MiB);
    await conn.disconnect();
  });

  test('pattern: data at odd offsets, large reads split, many in flight', async () => {
    const p = await nbdkit(['pattern', `size=${64 * MiB}`]);
    const conn = await open(p.uri);
    expect(conn.info.is.readOnly).toBe(true);
    checkPattern(await conn.read(8 * 12345, 4096), 8 * 12345);
    checkPattern(await conn.read(0, 40 * MiB), 0); // > 32 MiB: split in two requests
    const offsets = Array.from({ length: 200 }, (_, i) => ((i * 7919) % 16000) * 4096);
    const reads = await Promise.all(offsets.map((o) => conn.read(o, 4096)));
    reads.forEach((r, i) => checkPattern(r, offsets[i]!));
    await expect(conn.write(new Uint8Array(8), 0)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/read-only/),
    });
    await conn.disconnect();
  });

  test('read arenas: views returned by read() stay intact while lent reads reuse arenas (also --no-sr)', async () => {
    for (const sr of [[], ['--no-sr']]) {
      const p = await nbdkit(['pattern', `size=${64 * MiB}`], sr);
      const conn = await open(p.uri);
      const kept = await Promise.all([0, 1, 2, 3].map((i) => conn.read(i * MiB, 256 * 1024)));
      // 48 MiB more through the same connection, 16 at a time, each lent and given back at once.
      for (let base = 4 * MiB; base < 52 * MiB; base += 16 * 256 * 1024) {
        const lent = await Promise.all(Array.from({ length: 16 }, (_, i) => conn.readLent(base + i * 256 * 1024, 256 * 1024)));
        lent.forEach(({ data, release }, i) => {
          checkPattern(data, base + i * 256 * 1024);
          release();
        });
      }
      kept.forEach((v, i) => checkPattern(v, i * MiB));
      await conn.disconnect();
    }
  });

  test('data plugin: literal bytes then zeroes', async () => {
    const p = await nbdkit(['data', 'data=1 2 3 @4096 9', `size=${MiB}`]);
    const conn = await open(p.uri);
    const d = await conn.read(0, 8192);
    expect([...d.subarray(0, 4)]).toEqual([1, 2, 3, 0]);
    expect(d[4096]).toBe(9);
    expect(d.reduce((n, b) => n + b, 0)).toBe(1 + 2 + 3 + 9);
    await conn.disconnect();
  });

  test('sparse-random: zero extents read as zeroes, data extents do not', async () => {
    const p = await nbdkit(['sparse-random', `size=${16 * MiB}`, 'seed=42', 'percent=30', 'runlength=262144']);
    const c = await Client.connect(p.uri);
    const conn = await c.go('', { metaContexts: ['base:allocation'] });
    let off = 0;
    let zeroExtents = 0;
    let dataExtents = 0;
    while (off < 16 * MiB) {
      const ext = (await conn.blockStatus(off, 16 * MiB - off)).get('base:allocation')!;
      for (const e of ext) {
        const len = Math.min(e.length, 16 * MiB - e.offset, 256 * 1024);
        const d = await conn.read(e.offset, len);
        const allZero = d.every((b) => b === 0);
        if (e.flags & AllocationState.ZERO) {
          zeroExtents++;
          expect(allZero).toBe(true);
        } else {
          dataExtents++;
          expect(allZero).toBe(false);
        }
        off = e.offset + e.length;
        if (off >= 16 * MiB) break;
      }
    }
    expect(zeroExtents).toBeGreaterThan(0);
    expect(dataExtents).toBeGreaterThan(0);
    await conn.disconnect();
  });
});

describe('nbdkit handshake variants', () => {
  test('--no-sr: simple replies only', async () => {
    const p = await nbdkit(['memory', `size=${MiB}`], ['--no-sr']);
    const conn = await open(p.uri, { metaContexts: [] });
    expect(conn.structuredReplies).toBe(false);
    await conn.write(new Uint8Array([5, 6, 7]), 100);
    const [a, b] = await Promise.all([conn.read(100, 3), conn.read(0, 65536)]);
    expect([...a]).toEqual([5, 6, 7]);
    expect(b[100]).toBe(5);
    await expect(conn.blockStatus(0, 10)).rejects.toThrow(/no metadata context/);
    await conn.disconnect();
  });

  test('--mask-handshake=0: plain newstyle, only EXPORT_NAME', async () => {
    const p = await nbdkit(['pattern', `size=${MiB}`], ['--mask-handshake=0']);
    const c = await Client.connect(p.uri);
    expect(c.style).toBe('newstyle');
    await expect(c.list()).rejects.toBeInstanceOf(NbdUnsupportedError);
    await expect(c.info()).rejects.toThrow(/fixed-newstyle/);
    const conn = await c.go('');
    expect(conn.structuredReplies).toBe(false);
    checkPattern(await conn.read(4096, 4096), 4096);
    await conn.disconnect();
  });

  test('-o: oldstyle greeting carries size and flags', async () => {
    const p = await nbdkit(['pattern', `size=${2 * MiB}`], ['-o']);
    const c = await Client.connect(p.uri);
    expect(c.style).toBe('oldstyle');
    await expect(c.go('named')).rejects.toThrow(/oldstyle/);
    const conn = await c.go('');
    expect(conn.info.size).toBe(2 * MiB);
    checkPattern(await conn.read(MiB, 4096), MiB);
    await conn.disconnect();
  });

  test('-e name and the exportname filter: listed, info by name, unknown names refused', async () => {
    const p = await nbdkit(
      [
        '--filter=exportname',
        'memory',
        `size=${MiB}`,
        'exportname=disk1',
        'exportname=disk2',
        'exportname-strict=true',
        'exportname-list=explicit',
      ],
      ['-e', 'disk1'],
      'disk1',
    );
    const c = await Client.connect(p.uri);
    expect((await c.list()).map((e) => e.name).sort()).toEqual(['disk1', 'disk2']);
    expect((await c.info('disk2')).size).toBe(MiB);
    const err = await c.info('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdOptionError);
    expect((err as NbdOptionError).replyName).toMatch(/^ERR_/);
    expect(c.defaultExport).toBe('disk1');
    const conn = await c.go();
    expect(conn.info.name).toBe('disk1');
    await conn.disconnect();
  });

  test('-r: read-only, writes refused locally', async () => {
    const p = await nbdkit(['memory', `size=${MiB}`], ['-r']);
    const conn = await open(p.uri);
    expect(conn.info.is.readOnly).toBe(true);
    expect(conn.info.can.write).toBe(false);
    await expect(conn.write(new Uint8Array(1), 0)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/read-only/),
    });
    await expect(conn.zero(0, 512)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/read-only/),
    });
    await conn.disconnect();
  });
});

describe('nbdkit filters', () => {
  test('error filter: EIO on reads and ENOSPC on writes reach the caller as NbdError', async () => {
    const p = await nbdkit(['--filter=error', 'memory', `size=${MiB}`, 'error-pread=EIO', 'error-pread-rate=100%']);
    const conn = await open(p.uri);
    const e = await conn.read(0, 4096).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NbdError);
    expect(e).toMatchObject({ errno: Errno.EIO });
    await conn.write(new Uint8Array(10), 0); // writes still work
    await conn.disconnect();

    const q = await nbdkit(['--filter=error', 'memory', `size=${MiB}`, 'error-pwrite=ENOSPC', 'error-pwrite-rate=100%']);
    const c2 = await open(q.uri);
    await expect(c2.write(new Uint8Array(512), 0)).rejects.toMatchObject({ errno: Errno.ENOSPC, errnoName: 'ENOSPC' });
    expect((await c2.read(0, 512)).length).toBe(512);
    await c2.disconnect();
  });

  test('delay filter: a deep pipe with slow replies never stalls the requests held back for batching', async () => {
    const p = await nbdkit(['--filter=delay', 'pattern', `size=${MiB}`, 'delay-read=20ms']);
    const conn = await open(p.uri);
    // 40 in flight at once, then waves of 1, 3 and 9 more while the first are still slow.
    const offsets = Array.from({ length: 40 }, (_, i) => i * 4096);
    const first = Promise.all(offsets.map((o) => conn.read(o, 4096)));
    for (const n of [1, 3, 9]) {
      const wave = await Promise.all(Array.from({ length: n }, (_, i) => conn.read((100 + i) * 4096, 4096)));
      wave.forEach((d, i) => checkPattern(d, (100 + i) * 4096));
    }
    (await first).forEach((d, i) => checkPattern(d, offsets[i]!));
    const single = await conn.read(8192, 8); // a lone request with nothing else in flight
    checkPattern(single, 8192);
    await conn.disconnect();
  });

  test('delay filter: replies complete out of order and are matched', async () => {
    const p = await nbdkit(['--filter=delay', 'memory', `size=${MiB}`, 'delay-read=400ms']);
    const conn = await open(p.uri);
    await conn.write(new Uint8Array([42]), 0);
    const done: string[] = [];
    const r = conn.read(0, 1).then((d) => {
      done.push('read');
      return d;
    });
    const w = conn.write(new Uint8Array([43]), 4096).then(() => done.push('write'));
    const f = conn.flush().then(() => done.push('flush'));
    const [data] = await Promise.all([r, w, f]);
    expect(done.at(-1)).toBe('read'); // sent first, answered last
    expect(data[0]).toBe(42);
    await conn.disconnect();
  });

  test('blocksize-policy: constraints advertised and obeyed (server errors on violations)', async () => {
    const p = await nbdkit([
      '--filter=blocksize-policy',
      'memory',
      `size=${4 * MiB}`,
      'blocksize-minimum=4096',
      'blocksize-preferred=16384',
      'blocksize-maximum=65536',
      'blocksize-error-policy=error',
    ]);
    const conn = await open(p.uri);
    expect(conn.info.blockSizes).toEqual({ min: 4096, preferred: 16384, max: 65536 });
    await expect(conn.read(512, 4096)).rejects.toThrow(/aligned/);
    const data = new Uint8Array(MiB).map((_, i) => i % 251);
    await conn.write(data, 4096); // 16 requests of 64 KiB
    expect(Buffer.from(await conn.read(4096, MiB)).equals(Buffer.from(data))).toBe(true);
    await conn.zero(0, 2 * MiB);
    await conn.disconnect();
  });
});

describe('multi-conn', () => {
  test('connectMulti opens N connections when CAN_MULTI_CONN, 1 otherwise', async () => {
    const p = await nbdkit(['memory', `size=${8 * MiB}`]);
    const m = await connectMulti(p.uri, { connections: 3 });
    expect(m.connections.length).toBe(3);
    const blocks = Array.from({ length: 32 }, (_, i) => new Uint8Array(65536).fill(i + 1));
    await Promise.all(blocks.map((b, i) => m.write(b, i * 65536)));
    await m.flush();
    const back = await Promise.all(blocks.map((_, i) => m.read(i * 65536, 65536)));
    back.forEach((b, i) => expect(b[0]).toBe(i + 1));
    await m.disconnect();

    const q = await nbdkit(['--filter=multi-conn', 'memory', `size=${MiB}`, 'multi-conn-mode=disable']);
    const one = await connectMulti(q.uri, { connections: 3 });
    expect(one.info.can.multiConn).toBe(false);
    expect(one.connections.length).toBe(1);
    await one.disconnect();
  });
});
