// HttpDevice against a server that misbehaves (packages/devices/test/http-server.ts): each
// row is what the server does, and what the device must do. Wrong data never reaches the
// caller: a reply that does not match the request is EIO with a message; 5xx, resets,
// short bodies and silence are retried within the count and the deadline.
import { randomFillSync } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { NbdAbortError, NbdErrnoError } from '@nbd/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { answer, type Fault, type ImageServer, imageServer, reads } from '../../test/http-server.js';
import { HttpDevice } from './http-device.js';
import type { HttpDeviceOptions } from './http-options.js';

const image = randomFillSync(new Uint8Array(1 << 20));
const io = () => ({ fua: false, signal: new AbortController().signal });
/** Fast retries, so a table of faults runs in seconds. */
const quick: HttpDeviceOptions = { retries: 3, retryDelay: 10, timeout: 2000 };

let srv: ImageServer;
let dev: HttpDevice | undefined;
beforeAll(async () => {
  srv = await imageServer(image);
});
afterAll(() => srv.close());
afterEach(() => {
  dev?.close();
  dev = undefined;
  srv.fault = undefined;
  srv.seen.length = 0;
  srv.etag = '"v1"';
});

/** Opens the device (the fault is not yet on), sets the fault, reads 4 KiB at 8192. */
async function readWith(fault: ImageServer['fault'], opts: HttpDeviceOptions = quick): Promise<Uint8Array> {
  dev = await HttpDevice.open(srv.url, opts);
  srv.fault = fault;
  const buf = new Uint8Array(4096);
  await dev.readAt(buf, 8192, io());
  return buf;
}

/** A fault that fires for the first `n` reads (GETs with a range other than the probe's), then lets them through. */
function first(n: number, act: (res: ServerResponse) => void): Fault {
  let left = n;
  return (req, res) => {
    if (req.headers.range === 'bytes=0-0' || req.method !== 'GET' || left === 0) return false;
    left--;
    act(res);
    return true;
  };
}

const status =
  (code: number, headers: Record<string, string> = {}) =>
  (res: ServerResponse) => {
    res.writeHead(code, headers);
    res.end('error page');
  };

const good = () => image.subarray(8192, 8192 + 4096);

describe('HttpDevice: faults that are retried', () => {
  it('503 twice, then the data: read after two retries', async () => {
    expect(await readWith(first(2, status(503)))).toEqual(good());
    expect(reads(srv).length).toBe(3);
  });

  it('503 with retries: 0 is EIO at once, naming the status', async () => {
    const err = await readWith(first(1, status(503)), { ...quick, retries: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdErrnoError);
    expect((err as NbdErrnoError).errnoName).toBe('EIO');
    expect((err as Error).message).toMatch(/503/);
  });

  it('500, 502, 504, 408 and 429 are retried too', async () => {
    for (const code of [500, 502, 504, 408, 429]) {
      srv.seen.length = 0;
      expect(await readWith(first(1, status(code)))).toEqual(good());
      expect(reads(srv).length, String(code)).toBe(2);
      dev?.close();
    }
  });

  it('Retry-After is honoured (up to 8 s a wait)', async () => {
    const t0 = Date.now();
    expect(await readWith(first(1, status(503, { 'retry-after': '1' })))).toEqual(good());
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
  });

  it('a body cut short by a closed connection, once: read again', async () => {
    const half = (res: ServerResponse) => {
      res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576', 'content-length': '4096', etag: srv.etag });
      res.write(image.subarray(8192, 8192 + 1000), () => res.socket?.destroy());
    };
    expect(await readWith(first(1, half))).toEqual(good());
  });

  it('a body cut short every time: EIO "short body" after the retries', async () => {
    const half = (res: ServerResponse) => {
      res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576', 'content-length': '4096', etag: srv.etag });
      res.write(image.subarray(8192, 8192 + 1000), () => res.socket?.destroy());
    };
    const err = await readWith(first(100, half)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdErrnoError);
    expect((err as Error).message).toMatch(/short body \(1000 of 4096 bytes.*after 4 attempts/);
  });

  it('a chunked body that ends cleanly but short, every time: EIO "short body"', async () => {
    const short = (res: ServerResponse) => {
      res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576', etag: srv.etag });
      res.end(image.subarray(8192, 8192 + 1000));
    };
    const err = await readWith(first(100, short)).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/short body \(1000 of 4096 bytes\) \(after 4 attempts/);
  });

  it('a connection reset before any answer, once: read again', async () => {
    expect(await readWith(first(1, (res) => res.socket?.destroy()))).toEqual(good());
  });

  it('a kept-alive connection the server closes as the read arrives: tried again at once, not after the backoff', async () => {
    const t0 = Date.now();
    expect(
      await readWith(
        first(1, (res) => res.socket?.destroy()),
        { ...quick, retryDelay: 5000 },
      ),
    ).toEqual(good());
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(reads(srv).map((r) => r.socket)[0]).toBe(srv.seen[0]!.socket); // the first read came on the probe's connection
  });

  it('silence: each attempt ends at the timeout, then EIO', async () => {
    const t0 = Date.now();
    const err = await readWith(
      first(100, () => {}),
      { retries: 1, retryDelay: 10, timeout: 300 },
    ).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/no complete answer within 300 ms.*after 2 attempts/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('retries stop at the deadline however many are allowed', async () => {
    const t0 = Date.now();
    const err = await readWith(first(1000, status(503)), { retries: 100, retryDelay: 50, retryDeadline: 600 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/503.*retry deadline reached/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a read whose connection goes away during a retry wait is aborted, not retried on', async () => {
    dev = await HttpDevice.open(srv.url, { retries: 5, retryDelay: 5000 });
    const ac = new AbortController();
    const refuse = first(100, status(503));
    // The connection goes away once the first attempt has been answered: the read is then waiting to retry.
    srv.fault = (req, res, seen) => (refuse(req, res, seen) ? (setTimeout(() => ac.abort(), 50), true) : false);
    const t0 = Date.now();
    await expect(dev.readAt(new Uint8Array(10), 0, { fua: false, signal: ac.signal })).rejects.toBeInstanceOf(NbdAbortError);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(reads(srv).length).toBe(1);
  });
});

describe('HttpDevice: replies that are wrong are EIO at once (never retried, never data)', () => {
  const rows: [string, Fault, RegExp][] = [
    [
      'a changed ETag',
      first(1, (res) => {
        srv.etag = '"v2"';
        answer(res.req, res, srv);
      }),
      /the file changed \(ETag "v1" became "v2"\)/,
    ],
    [
      'a changed Last-Modified',
      first(1, (res) => {
        res.writeHead(206, {
          'content-range': 'bytes 8192-12287/1048576',
          'content-length': '4096',
          'last-modified': new Date().toUTCString(),
        });
        res.end(image.subarray(8192, 8192 + 4096));
      }),
      /the file changed \(Last-Modified/,
    ],
    [
      '200 with the whole file to a ranged GET',
      first(1, (res) => {
        res.writeHead(200, { 'content-length': image.length, etag: srv.etag });
        res.end(image);
      }),
      /ignored Range/,
    ],
    ['416', first(1, status(416, { 'content-range': 'bytes */1048576' })), /416/],
    ['404 (no redirect to look up again)', first(1, status(404)), /404/],
    [
      'a Content-Range for other bytes',
      first(1, (res) => {
        res.writeHead(206, { 'content-range': 'bytes 0-4095/1048576', 'content-length': '4096', etag: srv.etag });
        res.end(image.subarray(0, 4096));
      }),
      /Content-Range "bytes 0-4095\/1048576", not bytes 8192-12287/,
    ],
    [
      'a Content-Range with another total size',
      first(1, (res) => {
        res.writeHead(206, { 'content-range': 'bytes 8192-12287/2000000', 'content-length': '4096' });
        res.end(image.subarray(8192, 8192 + 4096));
      }),
      /size was 1048576, Content-Range says 2000000/,
    ],
    [
      'a 206 without Content-Range',
      first(1, (res) => {
        res.writeHead(206, { 'content-length': '4096' });
        res.end(image.subarray(8192, 8192 + 4096));
      }),
      /206 with Content-Range null/,
    ],
    [
      'a Content-Length other than the range',
      first(1, (res) => {
        res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576', 'content-length': '4095' });
        res.end(image.subarray(8192, 8192 + 4095));
      }),
      /Content-Length 4095, not 4096/,
    ],
    [
      'a chunked body longer than the range',
      first(1, (res) => {
        res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576' });
        res.end(image.subarray(8192, 8192 + 5000));
      }),
      /longer than the 4096 bytes/,
    ],
    [
      'a gzip-encoded body',
      first(1, (res) => {
        res.writeHead(206, { 'content-range': 'bytes 8192-12287/1048576', 'content-encoding': 'gzip' });
        res.end(image.subarray(8192, 8192 + 4096));
      }),
      /Content-Encoding: gzip/,
    ],
  ];
  for (const [what, fault, message] of rows) {
    it(what, async () => {
      const buf = new Uint8Array(4096);
      dev = await HttpDevice.open(srv.url, quick);
      srv.fault = fault;
      const err = await dev.readAt(buf, 8192, io())?.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NbdErrnoError);
      expect((err as NbdErrnoError).errnoName).toBe('EIO');
      expect((err as Error).message).toMatch(message);
      expect(reads(srv).length).toBe(1); // not retried
      if (!/chunked/.test(what)) expect(buf.every((b) => b === 0)).toBe(true); // nothing written
    });
  }
});
