// HttpDevice against nginx (Debian's), side by side with nbdkit's curl plugin on the
// same URLs: the same bytes (qemu-img compare, cmp of nbdcopy copies) and size over
// HTTP, HTTPS with a test CA, and redirects; and the same refusals for a server that
// ignores Range, a 404, a redirect loop, and an untrusted certificate.
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HttpDevice } from '@nbd/devices';
import { NbdErrnoError, NbdUnsupportedError } from '@nbd/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Nginx, startNginx } from '../support/nginx.js';
import { run, runOk, startNbdkit, tempDir } from '../support/peers.js';
import { expectSame, type Pair, pair } from './devices-support.js';

const MiB = 1024 * 1024;
const IO = { fua: false, signal: new AbortController().signal };

let web: Nginx;
let image: Buffer;
const tmp = tempDir('nbd-http-');
beforeAll(async () => {
  web = await startNginx();
  image = randomFillSync(Buffer.alloc(24 * MiB + 12345)); // not a multiple of any block size
  writeFileSync(join(web.root, 'disk.raw'), image);
  writeFileSync(join(web.root, 'small.raw'), image.subarray(0, 1000));
});
afterAll(async () => {
  await web?.stop();
  tmp.cleanup();
});

let p: Pair | undefined;
let dev: HttpDevice | undefined;
afterEach(async () => {
  await p?.stop(); // closes the device too
  p = undefined;
  dev?.close();
  dev = undefined;
});

/** Ours over HttpDevice.open(url, opts) beside `nbdkit curl url=URL kitArgs…`; same size, same bytes. */
async function sameAsNbdkit(url: string, opts: Parameters<typeof HttpDevice.open>[1] = {}, kitArgs: string[] = []): Promise<void> {
  const d = await HttpDevice.open(url, opts);
  p = await pair(d, ['curl', `url=${url}`, ...kitArgs]);
  const sizes = await Promise.all([p.ours.uri(), p.kit.uri].map((u) => runOk('nbdinfo', ['--size', u])));
  expect(sizes[0]).toBe(sizes[1]);
  expect(Number(sizes[0])).toBe(image.length);
  await expectSame(p.ours.uri(), p.kit.uri, tmp.dir, { maps: false });
}

/** nbdkit's curl plugin on `url`: nbdinfo's outcome and nbdkit's log. */
async function nbdkitOutcome(url: string, kitArgs: string[] = []): Promise<{ ok: boolean; log: string }> {
  const kit = await startNbdkit(['curl', `url=${url}`, ...kitArgs]);
  try {
    const r = await run('nbdinfo', ['--size', kit.uri]);
    return { ok: r.code === 0, log: kit.log() + r.stderr };
  } finally {
    await kit.stop();
  }
}

describe('HttpDevice against nginx, beside nbdkit curl', () => {
  it('reads what nginx serves: the library call', async () => {
    dev = await HttpDevice.open(`${web.http}/disk.raw`);
    expect(dev.size).toBe(image.length);
    for (const [off, len] of [
      [0, 512],
      [4095, 3],
      [image.length - 777, 777],
      [5 * MiB + 1, 2 * MiB],
    ] as const) {
      const buf = new Uint8Array(len);
      await dev.readAt(buf, off, IO);
      expect(Buffer.from(buf).equals(image.subarray(off, off + len))).toBe(true);
    }
    // Only ranged GETs after the HEAD: nothing read twice, nothing read whole.
    const mine = web.requests().filter((l) => l.includes('/disk.raw'));
    expect(mine[0]).toMatch(/^HEAD \/disk.raw 200/);
    expect(mine.slice(1).every((l) => /^GET \/disk.raw 206 bytes=\d+-\d+$/.test(l))).toBe(true);
  });

  it('HTTP: the same size and bytes as nbdkit curl', async () => {
    await sameAsNbdkit(`${web.http}/disk.raw`);
  });

  it('HTTPS with the test CA (caFile; nbdkit cainfo=)', async () => {
    await sameAsNbdkit(`${web.https}/disk.raw`, { caFile: web.caFile }, [`cainfo=${web.caFile}`]);
  });

  it('a redirect chain (301 → 302 → the file): the same as nbdkit curl', async () => {
    await sameAsNbdkit(`${web.http}/redirect2/disk.raw`);
  });

  it('a redirect chain is followed once, its target kept for redirectTtl, then looked up again', async () => {
    const before = web.requests().length;
    dev = await HttpDevice.open(`${web.http}/redirect2/disk.raw`, { redirectTtl: 1500 });
    expect(dev.target).toBe(`${web.http}/disk.raw`);
    const buf = new Uint8Array(4096);
    await Promise.all(Array.from({ length: 20 }, (_, i) => dev!.readAt(new Uint8Array(4096), i * 4096, IO)));
    const seen = () => web.requests().slice(before);
    expect(seen().filter((l) => l.includes('/redirect')).length).toBe(2); // HEAD 301, HEAD 302
    expect(seen().filter((l) => /^GET \/disk.raw 206 /.test(l)).length).toBe(20);
    await new Promise((r) => setTimeout(r, 1600));
    await dev.readAt(buf, 0, IO);
    expect(seen().filter((l) => l.includes('/redirect')).length).toBe(4);
    expect(Buffer.from(buf).equals(image.subarray(0, 4096))).toBe(true);
  });

  it('a redirect from HTTP to HTTPS', async () => {
    await sameAsNbdkit(`${web.http}/redirect-https/disk.raw`, { caFile: web.caFile }, [`cainfo=${web.caFile}`]);
  });

  it('a server that ignores Range: both refuse to serve it', async () => {
    const url = `${web.http}/norange/disk.raw`;
    const err = await HttpDevice.open(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdUnsupportedError);
    expect((err as Error).message).toMatch(/does not take byte ranges/);
    const kit = await nbdkitOutcome(url);
    expect(kit.ok).toBe(false);
    expect(kit.log).toMatch(/does not support 'range'/);
  });

  it('a 404: both refuse', async () => {
    const url = `${web.http}/nothere.raw`;
    const err = await HttpDevice.open(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdErrnoError);
    expect((err as Error).message).toMatch(/404/);
    const kit = await nbdkitOutcome(url);
    expect(kit.ok).toBe(false);
    expect(kit.log).toMatch(/404/);
  });

  it('a redirect loop: both refuse', async () => {
    const url = `${web.http}/loop/disk.raw`;
    const err = await HttpDevice.open(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdErrnoError);
    expect((err as Error).message).toMatch(/more than 10 redirects \(a loop\)/);
    expect((await nbdkitOutcome(url)).ok).toBe(false);
  });

  it('HTTPS without the CA: both refuse the certificate, and so do we with another CA', async () => {
    const url = `${web.https}/disk.raw`;
    const before = Date.now();
    for (const opts of [{}, { caFile: web.otherCaFile }]) {
      const err = await HttpDevice.open(url, opts).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NbdErrnoError);
      expect((err as Error).message).toMatch(/CERT|SELF_SIGNED|UNABLE_TO_VERIFY/);
    }
    expect(Date.now() - before).toBeLessThan(5000); // not retried
    const kit = await nbdkitOutcome(url);
    expect(kit.ok).toBe(false);
    expect(kit.log).toMatch(/certificate/i);
  });
});
