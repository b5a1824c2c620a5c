// qemu's NBD client (qemu-io, qemu-img) against our server.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '@nbd/server';
import { run, runOk, tempDir } from '../support/peers.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SIZE = 16 * MiB;

describe('qemu-io and qemu-img against our server', () => {
  const tmp = tempDir('nbd-qemu-');
  let srv: OurServer;
  beforeAll(async () => {
    srv = await startOurServer([
      { name: 'a', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'b', size: SIZE, device: new MemoryDevice(SIZE) },
    ]);
  });
  afterAll(async () => {
    await srv?.stop();
    tmp.cleanup();
  });

  const io = (cmds: string[]) => runOk('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), srv.uri('a')]);

  it('write -P, read -P, discard, write -z, map', async () => {
    await io(['write -P 0xab 0 1M', 'write -P 0xcd 4M 64k']);
    const ok = await io(['read -P 0xab 0 1M', 'read -P 0xcd 4M 64k']);
    expect(ok).not.toMatch(/Pattern verification failed/);
    // A wrong pattern is detected (the check can fail).
    const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 0 4k', srv.uri('a')]);
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
    const out = JSON.parse(await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', srv.uri('a')])) as {
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
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, srv.uri('b')]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('b')]);
    const back = join(tmp.dir, 'back.raw');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('b'), back]);
    await runOk('cmp', [src, back]);
    // compare notices a difference.
    const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('a')]);
    expect(differ.code).toBe(1);
  });
});
