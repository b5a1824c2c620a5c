// @nbd/client against qemu-nbd 7.2 and 10.0: base:allocation, qemu:dirty-bitmap and
// qemu:allocation-depth decoded and compared with `qemu-img map` of the same image at
// every extent boundary (over extended headers with qemu 10, so in BLOCK_STATUS_EXT
// chunks), and several connections to one writable `qemu-nbd -e N`.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, type Connection, connectMulti, type Extent } from '@nbd/client';
import { AllocationState, DirtyBitmapState } from '@nbd/protocol';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Peer, runOk, tempDir } from '../support/peers.js';
import { EACH_QEMU, qemuTool, startQemuNbdOf } from '../support/qemu.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

describe.each(EACH_QEMU)('our client against qemu-nbd %s', (_version, q) => {
  const img = (tool: 'qemu-img' | 'qemu-io', args: string[]) => runOk(qemuTool(q, tool), args);
  let tmp: ReturnType<typeof tempDir>;
  let peer: Peer;
  let map: MapEntry[];
  let conn: Connection;
  const writes = [
    [0, 65536],
    [5 * MiB, 3 * MiB],
    [40 * MiB + 65536, 131072],
  ] as const;

  beforeAll(async () => {
    tmp = tempDir('nbd-qemu-');
    const file = join(tmp.dir, 'disk.qcow2');
    await img('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(SIZE)]);
    await img('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 ${20 * MiB} ${MiB}`, file]); // before the bitmap: clean
    await img('qemu-img', ['bitmap', '--add', file, 'bm0']);
    for (const [off, len] of writes) await img('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${off} ${len}`, file]);
    await img('qemu-io', ['-f', 'qcow2', '-c', `write -z ${30 * MiB} ${MiB}`, file]); // allocated zeroes
    map = JSON.parse(await img('qemu-img', ['map', '--output=json', '-f', 'qcow2', file])) as MapEntry[];
    peer = await startQemuNbdOf(q, file, ['-f', 'qcow2', '-B', 'bm0', '-A']);
    const c = await Client.connect(peer.uri);
    expect(await c.listMetaContexts('', ['qemu:'])).toEqual(expect.arrayContaining(['qemu:dirty-bitmap:bm0', 'qemu:allocation-depth']));
    conn = await c.go('', {
      extendedHeaders: q.extendedHeaders,
      metaContexts: ['base:allocation', 'qemu:dirty-bitmap:bm0', 'qemu:allocation-depth'],
    });
    expect(conn.extendedHeaders).toBe(q.extendedHeaders);
  });

  afterAll(async () => {
    await conn?.disconnect().catch(() => {});
    await peer?.stop();
    tmp?.cleanup();
  });

  /** Every extent of `context` over the whole export. */
  async function fullMap(context: string): Promise<Extent[]> {
    const out: Extent[] = [];
    let off = 0;
    while (off < SIZE) {
      const ext = (await conn.blockStatus(off, SIZE - off, { contexts: [context] })).get(context)!;
      expect(ext.length).toBeGreaterThan(0);
      for (const e of ext) {
        out.push({ offset: e.offset, length: Math.min(e.length, SIZE - e.offset), flags: e.flags });
        off = e.offset + e.length;
      }
    }
    return out;
  }

  const flagsAt = (ext: Extent[], off: number) => ext.find((e) => e.offset <= off && off < e.offset + e.length)?.flags;
  const mapAt = (off: number) => map.find((e) => e.start <= off && off < e.start + e.length)!;
  /** Offsets where either side changes: compare the two descriptions there. */
  function boundaries(ext: Extent[]): number[] {
    const s = new Set<number>([0]);
    for (const e of ext) s.add(e.offset);
    for (const m of map) s.add(m.start);
    return [...s].filter((o) => o < SIZE).sort((a, b) => a - b);
  }

  test('base:allocation matches qemu-img map (data vs hole, zero)', async () => {
    const ext = await fullMap('base:allocation');
    expect(ext.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
    for (const off of boundaries(ext)) {
      const m = mapAt(off);
      const f = flagsAt(ext, off)!;
      expect({ off, zero: (f & AllocationState.ZERO) !== 0, hole: (f & AllocationState.HOLE) !== 0 }).toEqual({
        off,
        zero: m.zero,
        hole: !m.data,
      });
    }
    // and the data itself agrees
    expect((await conn.read(5 * MiB, 4096))[0]).toBe(0x5a);
    expect((await conn.read(20 * MiB, 4096))[0]).toBe(0x11);
    expect((await conn.read(30 * MiB, 4096)).every((b) => b === 0)).toBe(true);
  });

  test('qemu:allocation-depth matches qemu-img map (1 = top layer, 0 = unallocated)', async () => {
    const ext = await fullMap('qemu:allocation-depth');
    for (const off of boundaries(ext)) {
      const m = mapAt(off);
      expect({ off, depth: flagsAt(ext, off) }).toEqual({ off, depth: m.present ? m.depth + 1 : 0 });
    }
  });

  test('qemu:dirty-bitmap:bm0: written after the bitmap = dirty, the rest clean', async () => {
    const ext = await fullMap('qemu:dirty-bitmap:bm0');
    for (const [off, len] of writes) {
      for (const o of [off, off + len - 1]) expect(flagsAt(ext, o)! & DirtyBitmapState.DIRTY).toBe(DirtyBitmapState.DIRTY);
    }
    expect(flagsAt(ext, 20 * MiB)! & DirtyBitmapState.DIRTY).toBe(0); // written before the bitmap existed
    expect(flagsAt(ext, 50 * MiB)! & DirtyBitmapState.DIRTY).toBe(0);
    const dirty = ext.filter((e) => e.flags & DirtyBitmapState.DIRTY).reduce((n, e) => n + e.length, 0);
    expect(dirty).toBeGreaterThanOrEqual(65536 + 3 * MiB + 131072);
    expect(dirty).toBeLessThan(8 * MiB);
  });

  test('all three contexts in one request; reqOne limits to one extent each', async () => {
    const m = await conn.blockStatus(0, 8 * MiB);
    expect([...m.keys()].sort()).toEqual(['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:bm0']);
    const one = await conn.blockStatus(0, 8 * MiB, { reqOne: true });
    for (const list of one.values()) expect(list).toHaveLength(1);
  });

  test('multi-connection: 4 connections to a writable qemu-nbd -e 4, writes on each seen by all', async () => {
    const file = join(tmp.dir, 'multi.raw');
    await img('qemu-img', ['create', '-q', '-f', 'raw', file, String(16 * MiB)]);
    const shared = await startQemuNbdOf(q, file, ['-f', 'raw', '-e', '4', '--cache=none', '--aio=threads']);
    try {
      const multi = await connectMulti(shared.uri, { connections: 4, extendedHeaders: q.extendedHeaders });
      expect(multi.connections).toHaveLength(4); // qemu-nbd advertises CAN_MULTI_CONN when shared
      for (const c of multi.connections) expect(c.info.can.multiConn).toBe(true);
      const pieces = multi.connections.map(() => new Uint8Array(randomBytes(MiB)));
      await Promise.all(multi.connections.map((c, i) => c.write(pieces[i]!, i * 4 * MiB, { fua: i % 2 === 0 && c.info.can.fua })));
      await multi.flush();
      // Each connection reads what every other one wrote.
      for (const c of multi.connections) {
        for (let i = 0; i < pieces.length; i++)
          expect(Buffer.from(await c.read(i * 4 * MiB, MiB)).equals(Buffer.from(pieces[i]!))).toBe(true);
      }
      await multi.disconnect();
      // And the image holds them after qemu-nbd let go.
      await shared.stop();
      const disk = readFileSync(file);
      for (let i = 0; i < pieces.length; i++)
        expect(disk.subarray(i * 4 * MiB, i * 4 * MiB + MiB).equals(Buffer.from(pieces[i]!))).toBe(true);
      expect(disk.subarray(MiB, 4 * MiB).every((b) => b === 0)).toBe(true);
    } finally {
      await shared.stop();
    }
  });
});
