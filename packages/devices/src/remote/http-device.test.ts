// HttpDevice's behaviour against a scripted server (packages/devices/test/http-server.ts):
// how it finds the image, what it sends, where it sends it after redirects, how many
// connections it holds, and what a worker thread's copy does.
import { randomFillSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NbdErrnoError, NbdInvalidArgumentError } from '@nbd/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { answer, type ImageServer, imageServer, reads } from '../../test/http-server.js';
import { HttpDevice } from './http-device.js';
import { openDevice } from './open-http.js';

const image = randomFillSync(new Uint8Array(3 << 20));
const io = () => ({ fua: false, signal: new AbortController().signal });

let srv: ImageServer;
let dev: HttpDevice | undefined;
let redirector: { origin: string; close: () => Promise<void>; hits: string[]; to: (path: string) => string } | undefined;
beforeAll(async () => {
  srv = await imageServer(image);
});
afterAll(() => srv.close());
afterEach(async () => {
  dev?.close();
  dev = undefined;
  srv.fault = undefined;
  srv.seen.length = 0;
  srv.image = image;
  srv.peakConnections = 0;
  await redirector?.close();
  redirector = undefined;
});

/** A server on another origin that answers every request with 302 to `to(path)`, recording the Authorization it got. */
async function startRedirector(to: (path: string) => string): Promise<NonNullable<typeof redirector>> {
  const hits: string[] = [];
  const server: Server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url} auth=${req.headers.authorization ?? '-'}`);
    res.writeHead(302, { location: to(req.url ?? '/') });
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    to,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function readBack(d: HttpDevice, off: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  await d.readAt(buf, off, io());
  return buf;
}

describe('HttpDevice: finding the image', () => {
  it('HEAD gives the size when the server says Accept-Ranges: bytes', async () => {
    dev = await HttpDevice.open(srv.url);
    expect(dev.size).toBe(image.length);
    expect(srv.seen.map((r) => r.method)).toEqual(['HEAD']);
    expect(dev.readOnly && dev.multiConn).toBe(true);
    expect(await readBack(dev, image.length - 10, 10)).toEqual(image.subarray(-10));
  });

  it('a URL signed for GET only (HEAD refused with 403): the size from GET Range: bytes=0-0', async () => {
    srv.fault = (req, res) => (req.method === 'HEAD' ? (res.writeHead(403).end(), true) : false);
    dev = await HttpDevice.open(srv.url);
    expect(dev.size).toBe(image.length);
    expect(srv.seen.map((r) => `${r.method} ${r.range ?? ''}`)).toEqual(['HEAD ', 'GET bytes=0-0']);
  });

  it('a HEAD refused with headers that look like a file (Accept-Ranges, Content-Length): still GET bytes=0-0', async () => {
    srv.fault = (req, res) =>
      req.method === 'HEAD' ? (res.writeHead(403, { 'accept-ranges': 'bytes', 'content-length': 243 }).end(), true) : false;
    dev = await HttpDevice.open(srv.url);
    expect(dev.size).toBe(image.length);
  });

  it('a HEAD without Accept-Ranges: GET bytes=0-0 checks that ranges work', async () => {
    srv.fault = (req, res) => (req.method === 'HEAD' ? (res.writeHead(200, { 'content-length': image.length }).end(), true) : false);
    dev = await HttpDevice.open(srv.url);
    expect(dev.size).toBe(image.length);
    expect(srv.seen.length).toBe(2);
  });

  it('an empty image (416 to bytes=0-0, size 0)', async () => {
    srv.image = new Uint8Array(0);
    srv.fault = (req, res) => (req.method === 'HEAD' ? (res.writeHead(405).end(), true) : false);
    dev = await HttpDevice.open(srv.url);
    expect(dev.size).toBe(0);
    await dev.readAt(new Uint8Array(0), 0, io());
  });

  it('a probe that gets 503 is retried; open fails with EIO when it never succeeds', async () => {
    let n = 0;
    srv.fault = (_req, res) => (n++ < 2 ? (res.writeHead(503).end(), true) : false);
    dev = await HttpDevice.open(srv.url, { retryDelay: 10 });
    expect(dev.size).toBe(image.length);
    srv.fault = (_req, res) => (res.writeHead(503).end(), true);
    await expect(HttpDevice.open(srv.url, { retries: 1, retryDelay: 10 })).rejects.toBeInstanceOf(NbdErrnoError);
  });

  it('refuses what it cannot serve: other schemes, credentials in the URL, bad options', async () => {
    const bad = [
      () => HttpDevice.open('ftp://example.com/x'),
      () => HttpDevice.open('http://user:pw@127.0.0.1/x'),
      () => HttpDevice.open('not a url'),
      () => HttpDevice.open(srv.url, { headers: ['Range: bytes=0-1'] }),
      () => HttpDevice.open(srv.url, { headers: ['NoColon'] }),
      () => HttpDevice.open(srv.url, { headers: { 'X-A': 'a\r\nX-B: b' } }),
      () => HttpDevice.open(srv.url, { timeout: 0 }),
      () => HttpDevice.open(srv.url, { connections: 1.5 }),
      () => HttpDevice.open(srv.url, { ca: 'not pem' }),
      () => HttpDevice.open(srv.url, { caFile: '/nonexistent/ca.pem' }),
    ];
    for (const f of bad) await expect(f()).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    expect(srv.seen.length).toBe(0);
  });
});

describe('HttpDevice: what it sends, and where', () => {
  it('extra headers and the cookie go with every request (nbdkit header=, cookie=)', async () => {
    dev = await HttpDevice.open(srv.url, { headers: ['X-Token: abc', 'X-Two: 2'], cookie: 'session=s1; lang=en' });
    await readBack(dev, 0, 100);
    await readBack(dev, 5000, 100);
    expect(srv.seen.length).toBe(3);
    for (const r of srv.seen) {
      expect(r.headers['x-token']).toBe('abc');
      expect(r.headers['x-two']).toBe('2');
      expect(r.headers.cookie).toBe('session=s1; lang=en');
      expect(r.headers['user-agent']).toBe('nbd-http-device');
      expect(r.headers['accept-encoding']).toBe('identity');
    }
  });

  it('a redirect to another origin: the target is kept, Authorization is not sent there, other headers are', async () => {
    redirector = await startRedirector((path) => `${srv.origin}${path}`);
    dev = await HttpDevice.open(`${redirector.origin}/disk.raw`, { headers: ['Authorization: Bearer t0k', 'X-Keep: 1'] });
    expect(dev.target).toBe(srv.url);
    for (let i = 0; i < 10; i++) expect(await readBack(dev, i * 1000, 1000)).toEqual(image.subarray(i * 1000, (i + 1) * 1000));
    expect(redirector.hits).toEqual(['HEAD /disk.raw auth=Bearer t0k']);
    expect(srv.seen.length).toBe(11);
    for (const r of srv.seen) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers['x-keep']).toBe('1');
    }
  });

  it('an expired redirect target (403 there): the original URL is asked again for a new one', async () => {
    let token = 1;
    redirector = await startRedirector((path) => `${srv.origin}${path}?token=${token}`);
    srv.fault = (req, res) => (!req.url?.endsWith(`token=${token}`) ? (res.writeHead(403).end(), true) : false);
    dev = await HttpDevice.open(`${redirector.origin}/disk.raw`);
    expect(await readBack(dev, 0, 10)).toEqual(image.subarray(0, 10));
    token = 2; // the old pre-signed URL expires
    expect(await readBack(dev, 100, 10)).toEqual(image.subarray(100, 110));
    expect(dev.target).toBe(`${srv.url}?token=2`);
    expect(redirector.hits.length).toBe(2);
  });

  it('a redirect target that changed under a new lookup is EIO, not the new file', async () => {
    let token = 1;
    redirector = await startRedirector((path) => `${srv.origin}${path}?token=${token}`);
    srv.fault = (req, res) => (!req.url?.endsWith(`token=${token}`) ? (res.writeHead(403).end(), true) : false);
    dev = await HttpDevice.open(`${redirector.origin}/disk.raw`);
    token = 2;
    srv.image = image.subarray(0, 1 << 20);
    const err = await readBack(dev, 0, 10).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/the file changed \(size 3145728 became 1048576\)/);
  });

  it('redirects past the limit, and maxRedirects: 0 (nbdkit followlocation=false)', async () => {
    redirector = await startRedirector((path) => `${srv.origin}${path}`);
    await expect(HttpDevice.open(`${redirector.origin}/disk.raw`, { maxRedirects: 0 })).rejects.toThrow(/more than 0 redirects/);
    dev = await HttpDevice.open(`${redirector.origin}/disk.raw`, { maxRedirects: 1 });
    expect(dev.size).toBe(image.length);
  });
});

describe('HttpDevice: connections and threads', () => {
  it('several requests in flight, on at most `connections` keep-alive connections', async () => {
    let inFlight = 0;
    let most = 0;
    srv.fault = (req, res) => {
      if (req.method !== 'GET') return false;
      most = Math.max(most, ++inFlight);
      setTimeout(() => {
        inFlight--;
        answer(req, res, srv);
      }, 20);
      return true;
    };
    dev = await HttpDevice.open(srv.url, { connections: 4 });
    const got = await Promise.all(Array.from({ length: 64 }, (_, i) => readBack(dev!, i * 4096, 4096)));
    got.forEach((b, i) => expect(b).toEqual(image.subarray(i * 4096, (i + 1) * 4096)));
    expect(most).toBe(4); // as many as the pool holds, at once, and no more
    expect(srv.peakConnections).toBeLessThanOrEqual(4);
    expect(new Set(reads(srv).map((r) => r.socket)).size).toBeLessThanOrEqual(4);
  });

  it('share(): a worker thread opens the same image from the recipe, without a new lookup', async () => {
    dev = await HttpDevice.open(srv.url, { headers: ['X-T: 1'] });
    const recipe = dev.share();
    expect(recipe.module).toMatch(/open-http\.(js|ts)$/);
    const copy = openDevice(structuredClone(recipe.args)) as HttpDevice;
    try {
      srv.seen.length = 0;
      expect(copy.size).toBe(image.length);
      expect(await readBack(copy, 12345, 100)).toEqual(image.subarray(12345, 12445));
      expect(srv.seen.map((r) => r.method)).toEqual(['GET']);
      expect(srv.seen[0]!.headers['x-t']).toBe('1');
    } finally {
      copy.close();
    }
  });
});
