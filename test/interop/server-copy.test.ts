// Bulk data through our server: nbdcopy in and out (byte-for-byte with cmp),
// and nbdkit's nbd plugin proxying to us.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDevice } from '@nbd/devices';
import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closing } from '../support/closing.js';
import { type Peer, run, runOk, startNbdkit, tempDir } from '../support/peers.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SIZE = 32 * MiB;

describe('nbdcopy and nbdkit-nbd through our server', () => {
  const keep = closing('all');
  const tmp = tempDir('nbd-copy-');
  const src = join(tmp.dir, 'src.img');
  let srv: OurServer;
  let proxy: Peer | undefined;

  beforeAll(async () => {
    const data = Buffer.alloc(SIZE);
    // Random data with a zero run in the middle, so holes and data both travel.
    randomFillSync(data, 0, 8 * MiB);
    randomFillSync(data, 20 * MiB, SIZE - 20 * MiB);
    writeFileSync(src, data);
    const fileImg = join(tmp.dir, 'file.img');
    writeFileSync(fileImg, Buffer.alloc(SIZE));
    srv = await startOurServer([
      { name: '', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'file', size: SIZE, device: keep(await FileDevice.open(fileImg)) },
    ]);
  });
  afterAll(async () => {
    await proxy?.stop();
    await srv?.stop();
    tmp.cleanup();
  });

  it('nbdcopy file → server → file is byte-for-byte identical (memory device, 4 connections)', async () => {
    await runOk('nbdcopy', [src, srv.uri()]);
    const out = join(tmp.dir, 'out.img');
    await runOk('nbdcopy', [srv.uri(), out]);
    await runOk('cmp', [src, out]);
    const out2 = join(tmp.dir, 'out2.img');
    await runOk('nbdcopy', ['--no-extents', '--connections=1', '--requests=32', srv.uri(), out2]);
    await runOk('cmp', [src, out2]);
  });

  it('nbdcopy into and out of a FileDevice', async () => {
    await runOk('nbdcopy', ['--connections=1', src, srv.uri('file')]);
    const out = join(tmp.dir, 'file-out.img');
    await runOk('nbdcopy', [srv.uri('file'), out]);
    await runOk('cmp', [src, out]);
  });

  it('a changed byte is noticed (the comparison can fail)', async () => {
    const other = join(tmp.dir, 'other.img');
    const data = Buffer.alloc(SIZE);
    data[12345] = 1;
    writeFileSync(other, data);
    expect((await run('cmp', [src, other])).code).not.toBe(0);
  });

  it('nbdkit nbd plugin proxies to our server', async () => {
    proxy = await startNbdkit(['nbd', `socket=${srv.socket}`]);
    const info = JSON.parse(await runOk('nbdinfo', ['--json', proxy.uri]));
    expect(info.exports[0]['export-size']).toBe(SIZE);
    const out = join(tmp.dir, 'proxy-out.img');
    await runOk('nbdcopy', [proxy.uri, out]);
    await runOk('cmp', [src, out]);
    // Writes through the proxy land in our device.
    const zeros = join(tmp.dir, 'zeros.img');
    writeFileSync(zeros, Buffer.alloc(SIZE));
    await runOk('nbdcopy', [zeros, proxy.uri]);
    const back = join(tmp.dir, 'back.img');
    await runOk('nbdcopy', [srv.uri(), back]);
    await runOk('cmp', [zeros, back]);
    const map = await runOk('nbdinfo', ['--map', srv.uri()]);
    expect(map).toContain('zero');
  });
});
