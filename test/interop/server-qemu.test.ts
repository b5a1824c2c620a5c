// qemu's NBD client (qemu-io, qemu-img, qemu-storage-daemon's nbd blockdev), 7.2 and
// 10.0, against our server. qemu 10 negotiates extended headers by default: the
// recording proxy in front of our server shows what really crossed the wire.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replay } from '../captures/replay.js';
import { run, runOk, tempDir } from '../support/peers.js';
import { EACH_QEMU, qemuTool, startStorageDaemon } from '../support/qemu.js';
import { recordTo } from '../support/recorder.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SIZE = 16 * MiB;
const GiB = 2 ** 30;
const BIG = 8 * GiB;

describe.each(EACH_QEMU)('qemu-io, qemu-img and qemu-storage-daemon %s against our server', (_version, q) => {
  const tmp = tempDir('nbd-qemu-');
  const c = new MemoryDevice(SIZE);
  const big = new MemoryDevice(BIG); // sparse: only written pages take memory
  let srv: OurServer;
  beforeAll(async () => {
    srv = await startOurServer([
      { name: 'a', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'b', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'c', size: SIZE, device: c },
      { name: 'big', size: BIG, device: big },
    ]);
  });
  afterAll(async () => {
    await srv?.stop();
    tmp.cleanup();
  });

  const qemuIo = (args: string[]) => run(qemuTool(q, 'qemu-io'), args);
  const io = (cmds: string[], uri = srv.uri('a')) => runOk(qemuTool(q, 'qemu-io'), ['-f', 'raw', ...cmds.flatMap((x) => ['-c', x]), uri]);
  const img = (args: string[]) => runOk(qemuTool(q, 'qemu-img'), args);
  const bytesOf = (dev: MemoryDevice, off: number, len: number) => {
    const buf = new Uint8Array(len);
    dev.readAt(buf, off);
    return buf;
  };

  it('write -P, read -P, discard, write -z, map', async () => {
    await io(['write -P 0xab 0 1M', 'write -P 0xcd 4M 64k']);
    const ok = await io(['read -P 0xab 0 1M', 'read -P 0xcd 4M 64k']);
    expect(ok).not.toMatch(/Pattern verification failed/);
    // A wrong pattern is detected (the check can fail).
    const bad = await qemuIo(['-f', 'raw', '-c', 'read -P 0x11 0 4k', srv.uri('a')]);
    expect(bad.stdout + bad.stderr).toMatch(/Pattern verification failed/);
    // -u lets qemu send WRITE_ZEROES without NO_HOLE, so the pages may go.
    await io(['discard 0 512k', 'write -z -u 4M 64k']);
    const after = await io(['read -P 0 0 512k', 'read -P 0xab 512k 512k', 'read -P 0 4M 64k']);
    expect(after).not.toMatch(/Pattern verification failed/);
    // qemu-io's map of a raw-over-NBD image covers the whole export (qemu-img map below checks holes).
    const map = await io(['map']);
    expect(map).toMatch(/16 MiB \(0x1000000\) bytes/);
  });

  it('qemu-img map --output=json reports data and zero ranges', async () => {
    const out = JSON.parse(await img(['map', '--output=json', '-f', 'raw', srv.uri('a')])) as {
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }[];
    const data = out.filter((e) => e.data);
    expect(data.map((e) => [e.start, e.length])).toEqual([[512 * 1024, 512 * 1024]]);
    expect(out.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
  });

  it('qemu-img convert to and from, and compare', async () => {
    const src = join(tmp.dir, 'src.raw');
    const buf = Buffer.alloc(SIZE);
    randomFillSync(buf, 0, 3 * MiB);
    randomFillSync(buf, 9 * MiB, 2 * MiB);
    writeFileSync(src, buf);
    await img(['convert', '-n', '-f', 'raw', '-O', 'raw', src, srv.uri('b')]);
    await img(['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('b')]);
    const back = join(tmp.dir, 'back.raw');
    await img(['convert', '-f', 'raw', '-O', 'raw', srv.uri('b'), back]);
    await runOk('cmp', [src, back]);
    // compare notices a difference.
    const differ = await run(qemuTool(q, 'qemu-img'), ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('a')]);
    expect(differ.code).toBe(1);
  });

  // Regression: qemu-io 10 sends extended WRITEs without NBD_CMD_FLAG_PAYLOAD_LEN (the
  // header's length is the payload's); our server once refused them.
  it(`write -P 0x33 1M 4k, read back (${q.extendedHeaders ? 'extended headers, WRITE without PAYLOAD_LEN' : 'compact headers'})`, async () => {
    const rec = await recordTo(srv.socket);
    const out = await io(['write -P 0x33 1M 4k', 'read -P 0x33 1M 4k', 'read -P 0 0 1M', 'read -P 0 1028k 1M'], rec.uri('c'));
    expect(out).not.toMatch(/Pattern verification failed/);
    const conns = await rec.stop();
    expect(conns).toHaveLength(1);
    const seen = replay(conns[0]!);
    expect(seen.has('transmission extended')).toBe(q.extendedHeaders);
    expect(seen).toContain('request WRITE with payload');
    expect(seen).toContain('request WRITE FUA'); // qemu-io writes through: FUA, and (10.0) no PAYLOAD_LEN
    if (q.extendedHeaders) expect([...seen].filter((k) => k.startsWith('request WRITE ') && k.includes('PAYLOAD_LEN'))).toEqual([]);
    expect(bytesOf(c, MiB, 4096).every((b) => b === 0x33)).toBe(true);
    expect(bytesOf(c, MiB - 1, 1)[0]).toBe(0);
    expect(bytesOf(c, MiB + 4096, 1)[0]).toBe(0);
  });

  it(`an 8 GiB export: I/O above 4 GiB, a 5 GiB write -z -n -u${q.extendedHeaders ? ' in one 64-bit request' : ''}, qemu-img map`, async () => {
    const rec = await recordTo(srv.socket);
    const out = await io(
      [
        'write -P 0x21 5G 64k',
        'write -P 0x22 1G 64k',
        'write -z -n -u 0 5G',
        'read -P 0x21 5G 64k',
        'read -P 0 1G 64k',
        'read -P 0 4G 64k',
      ],
      rec.uri('big'),
    );
    expect(out).not.toMatch(/Pattern verification failed/);
    const map = JSON.parse(await img(['map', '--output=json', '-f', 'raw', rec.uri('big')])) as {
      start: number;
      length: number;
      data: boolean;
    }[];
    expect(map.filter((e) => e.data).map((e) => [e.start, e.length])).toEqual([[5 * GiB, 65536]]);
    const conns = await rec.stop();
    const seen = new Set(conns.flatMap((conn) => [...replay(conn)]));
    expect(seen.has('transmission extended')).toBe(q.extendedHeaders);
    for (const kind of [
      'request WRITE offset ≥ 4 GiB',
      'request READ offset ≥ 4 GiB',
      'request BLOCK_STATUS offset ≥ 4 GiB',
      'request WRITE_ZEROES FUA+FAST_ZERO',
    ]) {
      expect(seen, kind).toContain(kind);
    }
    // qemu 10 sends the 5 GiB WRITE_ZEROES and map's BLOCK_STATUS whole, and gets BLOCK_STATUS_EXT back.
    for (const kind of ['request WRITE_ZEROES length ≥ 4 GiB', 'request BLOCK_STATUS length ≥ 4 GiB', 'chunk BLOCK_STATUS_EXT']) {
      expect(seen.has(kind), kind).toBe(q.extendedHeaders);
    }
    expect(seen.has('chunk BLOCK_STATUS')).toBe(!q.extendedHeaders);
    expect(bytesOf(big, 5 * GiB, 65536).every((b) => b === 0x21)).toBe(true);
    expect(bytesOf(big, GiB, 65536).every((b) => b === 0)).toBe(true);
  });

  it('qemu-storage-daemon: an nbd blockdev on our server, exported again; qemu-io and qemu-img through it', async () => {
    const rec = await recordTo(srv.socket);
    const qsd = await startStorageDaemon(q, [`driver=nbd,node-name=n0,server.type=unix,server.path=${rec.socket},export=c`], 'n0', 'via');
    try {
      const out = await io(['write -P 0x44 2M 64k', 'write -z 3M 1M', 'read -P 0x44 2M 64k', 'read -P 0x33 1M 4k', 'flush'], qsd.uri);
      expect(out).not.toMatch(/Pattern verification failed/);
      const map = JSON.parse(await img(['map', '--output=json', '-f', 'raw', qsd.uri])) as {
        start: number;
        length: number;
        data: boolean;
      }[];
      const dataAt = (off: number) => map.find((e) => e.start <= off && off < e.start + e.length)?.data;
      expect([dataAt(MiB), dataAt(2 * MiB), dataAt(8 * MiB)]).toEqual([true, true, false]);
    } finally {
      await qsd.stop();
    }
    expect(bytesOf(c, 2 * MiB, 65536).every((b) => b === 0x44)).toBe(true);
    const conns = await rec.stop();
    expect(conns.length).toBeGreaterThanOrEqual(1);
    const seen = new Set(conns.flatMap((conn) => [...replay(conn)]));
    expect(seen.has('transmission extended')).toBe(q.extendedHeaders);
    expect(seen).toContain('request BLOCK_STATUS');
    expect(seen).toContain('request WRITE_ZEROES');
  });
});
