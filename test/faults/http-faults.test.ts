// A web server that fails, seen by NBD clients through our server over HttpDevice, and
// through nbdkit's curl plugin on the same URL: 503s that stop are retried (the copy is
// exact); a body cut short every time is EIO in both; a file that changes under the
// export (a new ETag) is EIO for us, while nbdkit curl 1.32 serves the new bytes.
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HttpDevice } from '@nbd/devices';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { answer, type ImageServer, imageServer } from '../../packages/devices/test/http-server.js';
import { type OurServer, startOurServer } from '../interop/server-support.js';
import { type Peer, run, runOk, startNbdkit, tempDir } from '../support/peers.js';

const image = randomFillSync(Buffer.alloc(8 << 20));
const tmp = tempDir('nbd-http-faults-');
let srv: ImageServer;
let ours: OurServer | undefined;
let kit: Peer | undefined;
beforeAll(async () => {
  srv = await imageServer(image);
});
afterAll(async () => {
  await srv.close();
  tmp.cleanup();
});
afterEach(async () => {
  await ours?.stop();
  await kit?.stop();
  ours = kit = undefined;
  srv.fault = undefined;
  srv.etag = '"v1"';
  srv.image = image;
});

async function serve(): Promise<OurServer> {
  const dev = await HttpDevice.open(srv.url, { retryDelay: 20 });
  ours = await startOurServer([{ name: '', size: dev.size, device: dev }]);
  return ours;
}

const isRead = (req: { method?: string; headers: { range?: string } }) => req.method === 'GET' && req.headers.range !== 'bytes=0-0';

describe('HttpDevice behind our server, when the web server fails', () => {
  it('every read answered 503 twice before the data: nbdcopy gets exact bytes', async () => {
    const tries = new Map<string, number>();
    srv.fault = (req, res) => {
      if (!isRead(req)) return false;
      const n = tries.get(req.headers.range!) ?? 0;
      tries.set(req.headers.range!, n + 1);
      if (n >= 2) return false;
      res.writeHead(503).end();
      return true;
    };
    const s = await serve();
    await runOk('nbdcopy', [s.uri(), join(tmp.dir, 'a')]);
    expect(readFileSync(join(tmp.dir, 'a')).equals(image)).toBe(true);
    expect([...tries.values()].every((n) => n === 3)).toBe(true);
  });

  it('a body cut short every time: EIO for the client, from us and from nbdkit curl; our server lives on', async () => {
    srv.fault = (req, res) => {
      if (!isRead(req)) return false;
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range!)!;
      const [a, b] = [Number(m[1]), Number(m[2])];
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${image.length}`, 'content-length': b - a + 1, etag: srv.etag });
      res.write(image.subarray(a, a + 100), () => res.socket?.destroy());
      return true;
    };
    const s = await serve();
    kit = await startNbdkit(['curl', `url=${srv.url}`]);
    for (const uri of [s.uri(), kit.uri]) {
      const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read 0 64k', uri]);
      expect(r.stdout + r.stderr, uri).toMatch(/Input\/output error/);
    }
    srv.fault = undefined;
    const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read 4096 4096', s.uri()]);
    expect(r.stdout + r.stderr).toMatch(/read 4096\/4096 bytes at offset 4096/);
    expect(r.stdout + r.stderr).not.toMatch(/error/i);
  });

  it('the file changes under the export (new ETag and bytes): EIO from us; nbdkit curl serves the new bytes', async () => {
    const s = await serve();
    kit = await startNbdkit(['curl', `url=${srv.url}`]);
    const changed = Buffer.from(image).fill(0x55, 0, 65536);
    srv.fault = (req, res) => {
      srv.etag = '"v2"';
      srv.image = changed;
      answer(req, res, srv);
      return true;
    };
    const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read 0 64k', s.uri()]);
    expect(r.stdout + r.stderr).toMatch(/Input\/output error/);
    const theirs = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x55 0 64k', kit.uri]);
    expect(theirs.stdout).not.toMatch(/error|mismatch/i);
    expect(theirs.code).toBe(0);
  });
});
