// HttpDevice on Ceph's S3 gateway (the test run's radosgw, test/support/ceph.ts): an
// object read through a SigV4 pre-signed GET URL (HEAD is refused there: the size comes
// from GET bytes=0-0), side by side with nbdkit's curl plugin; an expired URL; and a
// redirect that hands out short-lived pre-signed URLs (KubeVirt CDI's pattern), looked
// up again when the one in use expires.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { HttpDevice } from '@nbd/devices';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CephCluster, sharedCeph } from '../support/ceph.js';
import { run, runOk, startNbdkit, tempDir } from '../support/peers.js';
import { objectUrl, presignedGet, s3Put } from '../support/s3.js';
import { expectSame, pair } from './devices-support.js';
import { startOurServer } from './server-support.js';

const BUCKET = 'nbd-http';
const KEY = 'images/disk.raw';
const image = randomFillSync(Buffer.alloc((20 << 20) + 999));
const IO = { fua: false, signal: new AbortController().signal };
const tmp = tempDir('nbd-http-rgw-');
let ceph: CephCluster;
beforeAll(async () => {
  ceph = await sharedCeph();
  await s3Put(ceph, BUCKET, KEY, image, { publicRead: true });
  writeFileSync(join(tmp.dir, 'disk.raw'), image);
}, 120_000);
afterAll(() => tmp.cleanup());

describe('HttpDevice on radosgw (S3)', () => {
  it('a pre-signed GET URL: HEAD is refused (403), the size comes from GET bytes=0-0, the bytes are the object', async () => {
    const url = presignedGet(ceph, BUCKET, KEY, 600);
    expect((await fetch(url, { method: 'HEAD' })).status).toBe(403);
    const dev = await HttpDevice.open(url);
    const ours = await startOurServer([{ name: '', size: dev.size, device: dev }]);
    try {
      expect(dev.size).toBe(image.length);
      await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(tmp.dir, 'disk.raw'), ours.uri()]);
    } finally {
      await ours.stop();
    }
  });

  it('nbdkit curl 1.32 cannot open the same pre-signed URL (it sizes with HEAD only)', async () => {
    const kit = await startNbdkit(['curl', `url=${presignedGet(ceph, BUCKET, KEY, 600)}`]);
    try {
      const r = await run('nbdinfo', ['--size', kit.uri]);
      expect(r.code).not.toBe(0);
      expect(kit.log()).toMatch(/HEAD request.*403/s);
    } finally {
      await kit.stop();
    }
  });

  it('the public object URL: the same size and bytes as nbdkit curl, and as our pre-signed export', async () => {
    const url = objectUrl(ceph, BUCKET, KEY);
    const p = await pair(await HttpDevice.open(url), ['curl', `url=${url}`]);
    const signed = await HttpDevice.open(presignedGet(ceph, BUCKET, KEY, 600));
    const ours2 = await startOurServer([{ name: '', size: signed.size, device: signed }]);
    try {
      await expectSame(p.ours.uri(), p.kit.uri, tmp.dir, { maps: false });
      await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ours2.uri(), p.kit.uri]);
      expect(await runOk('nbdinfo', ['--size', ours2.uri()])).toBe(await runOk('nbdinfo', ['--size', p.kit.uri]));
    } finally {
      await Promise.all([p.stop(), ours2.stop()]);
    }
  });

  it('an expired pre-signed URL: open fails with 403, and so does nbdkit', async () => {
    const url = presignedGet(ceph, BUCKET, KEY, 1, new Date(Date.now() - 10_000));
    await expect(HttpDevice.open(url)).rejects.toThrow(/403/);
    const kit = await startNbdkit(['curl', `url=${url}`]);
    try {
      expect((await run('nbdinfo', ['--size', kit.uri])).code).not.toBe(0);
    } finally {
      await kit.stop();
    }
  });

  it('a redirect to short-lived pre-signed URLs: the one in use expires, the redirect is asked again', async () => {
    const minted: string[] = [];
    const server: Server = createServer((_req, res) => {
      const url = presignedGet(ceph, BUCKET, KEY, 4);
      minted.push(url);
      res.writeHead(307, { location: url }).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/images/disk`;
    const dev = await HttpDevice.open(api, { headers: ['Authorization: Bearer api-token'] });
    try {
      const buf = new Uint8Array(65536);
      await dev.readAt(buf, 1 << 20, IO);
      expect(Buffer.from(buf).equals(image.subarray(1 << 20, (1 << 20) + 65536))).toBe(true);
      expect(minted.length).toBe(2); // HEAD (refused by the pre-signed target), then GET bytes=0-0
      await new Promise((r) => setTimeout(r, 5000)); // the pre-signed URL expires (RGW answers 403)
      await dev.readAt(buf, 5 << 20, IO);
      expect(Buffer.from(buf).equals(image.subarray(5 << 20, (5 << 20) + 65536))).toBe(true);
      expect(minted.length).toBe(4);
      expect(dev.target).toBe(minted.at(-1));
    } finally {
      dev.close();
      await new Promise((r) => server.close(r));
    }
  });
});
