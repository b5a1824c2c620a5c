// @nbd/client against qemu-nbd 10.0 over extended headers (NBD_OPT_EXTENDED_HEADERS): a
// sparse 8 GiB export, READ/WRITE above 4 GiB, one BLOCK_STATUS, TRIM and WRITE_ZEROES
// each with a 64-bit length, BLOCK_STATUS_EXT replies, and the payload form of
// BLOCK_STATUS (NBD_FLAG_BLOCK_STATUS_PAYLOAD) choosing contexts. The recording proxy
// sits between the two, so every claim about the wire is checked on the bytes.
import { join } from 'node:path';
import { Client, type Connection } from '@nbd/client';
import { AllocationState, TransmissionFlag } from '@nbd/protocol';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { replay } from '../captures/replay.js';
import { type Peer, runOk, tempDir } from '../support/peers.js';
import { QEMU_10, qemuTool, startQemuNbdOf } from '../support/qemu.js';
import { type Recorder, recordTo } from '../support/recorder.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const SIZE = 8 * GiB;
const q = QEMU_10;

describe(`our client against qemu-nbd ${q.version}, extended headers`, () => {
  let tmp: ReturnType<typeof tempDir>;
  let file: string;
  let peer: Peer;
  let rec: Recorder;
  let conn: Connection;

  beforeAll(async () => {
    tmp = tempDir('nbd-qemu10-');
    file = join(tmp.dir, 'big.qcow2');
    // qcow2 so holes and zeroes are qemu's own (a raw file's would depend on the host filesystem).
    await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'qcow2', file, String(SIZE)]);
    await runOk(qemuTool(q, 'qemu-io'), ['-f', 'qcow2', '-c', `write -P 0x77 ${6 * GiB} ${MiB}`, file]);
    peer = await startQemuNbdOf(q, file, ['-f', 'qcow2', '-A', '--discard=unmap']);
    rec = await recordTo(peer.socket);
    const c = await Client.connect(rec.uri());
    conn = await c.go('', { extendedHeaders: true, metaContexts: ['base:allocation', 'qemu:allocation-depth'] });
  });

  afterAll(async () => {
    await conn?.disconnect().catch(() => {});
    await rec?.stop();
    await peer?.stop();
    tmp?.cleanup();
  });

  test('negotiated: extended headers, an 8 GiB export, BLOCK_STATUS_PAYLOAD advertised', () => {
    expect(conn.extendedHeaders).toBe(true);
    expect(conn.info.size).toBe(SIZE);
    expect(conn.info.can.blockStatusPayload).toBe(true);
    expect(conn.info.flags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).toBe(TransmissionFlag.BLOCK_STATUS_PAYLOAD);
  });

  test('READ and WRITE above 4 GiB', async () => {
    expect((await conn.read(6 * GiB, 4096)).every((b) => b === 0x77)).toBe(true);
    const data = new Uint8Array(256 * 1024).map((_, i) => (i * 7 + 1) & 0xff);
    const at = 5 * GiB + 12 * MiB + 4096;
    await conn.write(data, at, { fua: conn.info.can.fua });
    expect(Buffer.from(await conn.read(at, data.length)).equals(Buffer.from(data))).toBe(true);
    expect((await conn.read(at - 4096, 4096)).every((b) => b === 0)).toBe(true);
  });

  test('BLOCK_STATUS over the whole 8 GiB in one request: 64-bit extents', async () => {
    // Both contexts (a plain request) and one of them (the payload form, effect length in the payload).
    for (const m of [await conn.blockStatus(0, SIZE), await conn.blockStatus(0, SIZE, { contexts: ['base:allocation'] })]) {
      expect(m.get('base:allocation')![0]!.length).toBeGreaterThan(2 ** 32);
    }
    const m = await conn.blockStatus(0, SIZE, { contexts: ['base:allocation'] });
    const ext = m.get('base:allocation')!;
    // The unwritten first 5 GiB come back as one hole longer than any 32-bit length.
    expect(ext[0]).toMatchObject({ offset: 0, flags: AllocationState.HOLE | AllocationState.ZERO });
    expect(ext[0]!.length).toBeGreaterThan(2 ** 32);
    const covering = (off: number) => ext.find((e) => e.offset <= off && off < e.offset + e.length);
    expect(covering(6 * GiB)?.flags).toBe(0); // data
  });

  test('BLOCK_STATUS payload form: one context of the two asked for, qemu answers only that one', async () => {
    await conn.write(new Uint8Array(65536).fill(1), 3 * GiB + 65536);
    const one = await conn.blockStatus(3 * GiB, 8 * MiB, { contexts: ['qemu:allocation-depth'] });
    expect([...one.keys()]).toEqual(['qemu:allocation-depth']);
    const depth = one.get('qemu:allocation-depth')!;
    const at = (off: number) => depth.find((e) => e.offset <= off && off < e.offset + e.length)?.flags;
    expect([at(3 * GiB), at(3 * GiB + 65536)]).toEqual([0, 1]); // unallocated, then the top layer
    const both = await conn.blockStatus(3 * GiB, 8 * MiB);
    expect([...both.keys()].sort()).toEqual(['base:allocation', 'qemu:allocation-depth']);
  });

  test('TRIM and WRITE_ZEROES with 64-bit lengths', async () => {
    const at = 5 * GiB + 12 * MiB;
    await conn.zero(0, 6 * GiB, { noHole: false }); // covers the write above
    expect((await conn.read(at + 4096, 4096)).every((b) => b === 0)).toBe(true);
    await conn.write(new Uint8Array(65536).fill(0x5e), 7 * GiB);
    expect((await conn.blockStatus(7 * GiB, 65536)).get('base:allocation')![0]!.flags).toBe(0); // data, before the trim
    await conn.trim(2 * GiB, 6 * GiB); // to the end: the 0x77 and 0x5e data go
    await conn.flush();
    const m = await conn.blockStatus(0, SIZE, { contexts: ['base:allocation'] });
    const ext = m.get('base:allocation')!;
    for (const off of [6 * GiB, 7 * GiB]) {
      const e = ext.find((x) => x.offset <= off && off < x.offset + x.length)!;
      expect(e.flags & AllocationState.ZERO).toBe(AllocationState.ZERO);
    }
    expect((await conn.read(7 * GiB, 4096)).every((b) => b === 0)).toBe(true);
  });

  test('on the wire: extended requests with 64-bit lengths and offsets, BLOCK_STATUS_EXT, PAYLOAD_LEN', async () => {
    await conn.disconnect();
    const conns = await rec.stop();
    expect(conns).toHaveLength(1);
    const seen = replay(conns[0]!);
    for (const kind of [
      'option extended-headers',
      'transmission extended',
      'request READ offset ≥ 4 GiB',
      'request WRITE offset ≥ 4 GiB',
      'request WRITE PAYLOAD_LEN',
      'request BLOCK_STATUS length ≥ 4 GiB',
      'request BLOCK_STATUS PAYLOAD_LEN',
      'request WRITE_ZEROES length ≥ 4 GiB',
      'request TRIM length ≥ 4 GiB',
      'chunk BLOCK_STATUS_EXT',
    ]) {
      expect(seen, kind).toContain(kind);
    }
    expect(seen).not.toContain('chunk BLOCK_STATUS'); // only the extended form
    // And the image agrees: qemu-img map of the file (qemu-nbd gone) sees the trimmed tail as holes.
    await peer.stop();
    const map = JSON.parse(await runOk(qemuTool(q, 'qemu-img'), ['map', '--output=json', '-f', 'qcow2', file])) as {
      start: number;
      length: number;
      data: boolean;
    }[];
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
    expect(map.filter((e) => e.data && e.start + e.length > 2 * GiB)).toEqual([]); // the data written at 3, 5, 6 and 7 GiB
  });
});
