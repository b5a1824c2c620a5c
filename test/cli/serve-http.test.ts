// `nbd serve http URL` (and `curl url=URL`, nbdkit's spelling) and `nbd copy http(s)://…`:
// the same command line as nbdkit's curl plugin serves the same bytes; nbdkit curl's
// parameters reach the server (header= repeated, cookie=, cainfo=); worker threads;
// failures end `nbd serve` with one line; an http URL is a copy source only.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type ImageServer, imageServer } from '../../packages/devices/test/http-server.js';
import { type Nginx, startNginx } from '../support/nginx.js';
import { type Peer, runOk, startNbdkit } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { nbd, nbdOk, startNbdServe } from './support.js';

const s = scoped('nbd-cli-http-');
const image = randomFillSync(Buffer.alloc((16 << 20) + 4321));
let web: Nginx;
let scripted: ImageServer;
beforeAll(async () => {
  web = await startNginx();
  writeFileSync(join(web.root, 'disk.raw'), image);
  scripted = await imageServer(image);
});
afterAll(async () => {
  await web?.stop();
  await scripted?.close();
});

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** nbdkit and `nbd serve` with the same arguments: same size, same bytes. */
async function sameAsNbdkit(args: string[], ours: string[] = []): Promise<void> {
  const [theirs, mine] = await Promise.all([peer(startNbdkit(args)), peer(startNbdServe([...ours, ...args]))]);
  const size = await runOk('nbdinfo', ['--size', theirs.uri]);
  expect(await runOk('nbdinfo', ['--size', mine.uri])).toBe(size);
  expect(Number(size)).toBe(image.length);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', theirs.uri, mine.uri]);
}

describe('nbd serve http', () => {
  test("nbdkit's command line: curl url=URL, over HTTPS with cainfo=, after a redirect, on worker threads; cache and readahead on top", async () => {
    await sameAsNbdkit(['curl', `url=${web.http}/disk.raw`]);
    await sameAsNbdkit(['curl', `url=${web.https}/disk.raw`, `cainfo=${web.caFile}`]);
    await sameAsNbdkit(['curl', `${web.http}/redirect/disk.raw`], ['-t', '2']);
    const served = await peer(startNbdServe(['http', `${web.http}/disk.raw`]));
    await runOk('qemu-img', ['compare', '-f', 'raw', join(web.root, 'disk.raw'), served.uri]);
    // For sequential readers: the cache filter keeps what was read, readahead over it fetches ahead.
    const cached = await peer(startNbdServe(['--filter=readahead', '--filter=cache', 'http', `${web.http}/disk.raw`]));
    await runOk('qemu-img', ['compare', '-f', 'raw', join(web.root, 'disk.raw'), cached.uri]);
  });

  test('header= (repeated), cookie=, user-agent= go with every request; a pre-signed query stays out of the description', async () => {
    scripted.seen.length = 0;
    const url = `${scripted.url}?X-Amz-Signature=secret`;
    const served = await peer(
      startNbdServe(['http', url, 'header=X-One: 1', 'header=X-Two: 2', 'cookie=a=b; c=d', 'user-agent=test-agent', 'timeout=5']),
    );
    const info = await runOk('nbdinfo', [served.uri]);
    expect(info).not.toContain('secret');
    expect(info).toMatch(/description: http:\/\/127\.0\.0\.1:\d+\/disk\.raw\?…/);
    expect(scripted.seen.length).toBeGreaterThan(1);
    for (const r of scripted.seen) {
      expect([r.headers['x-one'], r.headers['x-two'], r.headers.cookie, r.headers['user-agent']]).toEqual([
        '1',
        '2',
        'a=b; c=d',
        'test-agent',
      ]);
    }
  });

  test('the HTTP parameters are taken (retries= by --filter=retry when it is there); unknown ones are refused', async () => {
    const url = `${web.http}/disk.raw`;
    for (const args of [
      ['http', url, 'retries=2', 'retry-delay=0.1', 'retry-deadline=10', 'connections=2', 'redirect-ttl=5', 'followlocation=false'],
      ['--filter=retry', 'http', url, 'retries=2', 'retry-delay=1'],
    ]) {
      const served = await peer(startNbdServe(args));
      expect(Number(await runOk('nbdinfo', ['--size', served.uri]))).toBe(image.length);
    }
    const r = await nbd(['serve', '-U', join(s.tmp(), 's'), 'http', url, 'nonsense=1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown parameter nonsense=/);
  });

  test('what nbdkit refuses, nbd serve refuses too, at start, in one line: 404, no Range, a loop, an unknown CA', async () => {
    const sock = join(s.tmp(), 's');
    for (const [url, message] of [
      [`${web.http}/nothere.raw`, /404 Not Found/],
      [`${web.http}/norange/disk.raw`, /does not take byte ranges/],
      [`${web.http}/loop/disk.raw`, /more than 10 redirects \(a loop\)/],
      [`${web.https}/disk.raw`, /CERT|UNABLE_TO_VERIFY|SELF_SIGNED/],
    ] as const) {
      const r = await nbd(['serve', '-U', sock, 'http', url]);
      expect(r.code, url).toBe(1);
      expect(r.stderr.trim().split('\n').length).toBe(1);
      expect(r.stderr).toMatch(message);
    }
  });
});

describe('nbd copy from http(s) URLs', () => {
  test('to a file, through a redirect, on 2 threads, and over HTTPS with NODE_EXTRA_CA_CERTS', async () => {
    const dir = s.tmp();
    await nbdOk(['copy', `${web.http}/redirect/disk.raw`, join(dir, 'out')]);
    expect(readFileSync(join(dir, 'out')).equals(image)).toBe(true);
    await nbdOk(['copy', '-T', '2', '-C', '2', `${web.http}/disk.raw`, join(dir, 'out2')]);
    expect(readFileSync(join(dir, 'out2')).equals(image)).toBe(true);
    await nbdOk(['copy', `${web.https}/disk.raw`, join(dir, 'out3')], { env: { NODE_EXTRA_CA_CERTS: web.caFile } });
    expect(readFileSync(join(dir, 'out3')).equals(image)).toBe(true);
  });

  test('an http URL as the destination is a usage error; a 404 source fails with its status', async () => {
    const dir = s.tmp();
    writeFileSync(join(dir, 'f'), 'x');
    const r = await nbd(['copy', join(dir, 'f'), `${web.http}/up.raw`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/can only be the source/);
    const missing = await nbd(['copy', `${web.http}/nothere.raw`, join(dir, 'g')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/404/);
  });
});
