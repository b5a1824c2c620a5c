// copy({ threads }): worker threads that open both endpoints again and take 64 MiB
// chunks in turn, checked against nbdcopy's output; errors and aborts from any thread.
// Imports the built dist/: worker threads load JavaScript, not the TS sources.
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Errno, NbdErrnoError } from '@nbd/protocol';
import { type Device, listen } from '@nbd/server';
import { expect, test } from 'vitest';
import { copy } from '../../packages/copy/dist/index.js';
import { runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';

const MiB = 1024 * 1024;
const { nbdkit, tmp } = scoped('nbd-copy-threads-');
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const threadsNow = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);

test('export → file on 3 threads: same bytes as nbdcopy, progress adds up to the size', async () => {
  const src = await nbdkit(['sparse-random', `size=${200 * MiB}`, 'seed=11', 'percent=40', 'runlength=1048576']);
  const dir = tmp();
  const ours = join(dir, 'ours.img');
  const theirs = join(dir, 'theirs.img');
  const seen: number[] = [];
  const r = await copy(src.uri, ours, { threads: 3, onProgress: (p) => seen.push(p.done) });
  await runOk('nbdcopy', [src.uri, theirs]);
  expect(sha(ours)).toBe(sha(theirs));
  expect(statSync(ours).size).toBe(200 * MiB);
  expect(r.bytes).toBe(200 * MiB);
  expect(r.zeroBytes).toBeGreaterThan(60 * MiB); // ~60 % zero, found by every thread together
  expect(seen.at(-1)).toBe(200 * MiB);
  expect(seen.every((d, i) => i === 0 || d >= seen[i - 1]!)).toBe(true);
});

test('file → export on 2 threads, read back byte for byte', async () => {
  const dir = tmp();
  const src = join(dir, 'src.img');
  const data = Buffer.alloc(150 * MiB);
  randomFillSync(data, 0, 40 * MiB);
  randomFillSync(data, 100 * MiB);
  writeFileSync(src, data);
  const dst = await nbdkit(['memory', `${150 * MiB}`]);
  const r = await copy(src, dst.uri, { threads: 2, connections: 4 });
  expect(r.zeroBytes).toBeGreaterThanOrEqual(60 * MiB);
  const back = join(dir, 'back.img');
  await runOk('nbdcopy', [dst.uri, back]);
  expect(sha(back)).toBe(sha(src));
});

test("a worker thread's error rejects the copy and stops the other threads", async () => {
  const dir = tmp();
  const src = join(dir, 'src.img');
  writeFileSync(src, Buffer.alloc(256 * MiB, 1));
  const before = threadsNow();
  let first = true;
  // This thread opened the file already; the worker, starting later, finds it gone.
  const copying = copy(src, 'null:', {
    threads: 2,
    onProgress: () => {
      if (first) unlinkSync(src);
      first = false;
    },
  });
  await expect(copying).rejects.toMatchObject({ code: 'ENOENT' });
  await new Promise((r) => setTimeout(r, 200));
  expect(threadsNow()).toBeLessThanOrEqual(before);
});

test("a worker thread's read error says where, with the server's message, as an NbdErrnoError", async () => {
  const size = 128 * MiB;
  // Chunk 0 (this thread's) is slow; chunk 1 (the worker's) fails at once.
  const device: Device = {
    size,
    multiConn: true,
    readAt: async (buf, offset) => {
      if (offset >= 64 * MiB) throw new NbdErrnoError(Errno.EIO, 'bad sector');
      await new Promise((r) => setTimeout(r, 100));
      buf.fill(1);
    },
  };
  const sock = join(tmp(), 's');
  const server = await listen({ path: sock }, [{ name: 'disk', size, device }]);
  try {
    const err = (await copy(`nbd+unix:///disk?socket=${sock}`, 'null:', { threads: 2, connections: 2 }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NbdErrnoError); // vitest resolves dist's @nbd/protocol to the same sources
    expect(err).toMatchObject({ code: 'NBD_ERR_ERRNO', errno: Errno.EIO, errnoName: 'EIO' });
    const [, offset] =
      /^reading nbd\+unix:\/\/\/disk\?socket=\S+: offset (\d+), 524288 bytes: EIO \(Input\/output error\): .*bad sector/.exec(
        err.message,
      ) ?? [];
    expect(Number(offset), err.message).toBeGreaterThanOrEqual(64 * MiB);
  } finally {
    await server.close();
  }
});

test('aborting stops every thread and rejects', async () => {
  const src = await nbdkit(['--filter=delay', 'pattern', `${512 * MiB}`, 'rdelay=20ms']);
  const ac = new AbortController();
  const before = threadsNow();
  const copying = copy(src.uri, 'null:', { threads: 2, signal: ac.signal });
  setTimeout(() => ac.abort(), 300);
  await expect(copying).rejects.toThrow(/abort/i);
  await new Promise((r) => setTimeout(r, 300));
  expect(threadsNow()).toBeLessThanOrEqual(before);
});

test('endpoints that are not strings copy on this thread only (threads is ignored)', async () => {
  const src = await nbdkit(['pattern', `${8 * MiB}`]);
  const { open } = await import('@nbd/client');
  const conn = await open(src.uri);
  const before = threadsNow();
  let most = before;
  const r = await copy(conn, 'null:', { threads: 4, requestSize: 256 * 1024, onProgress: () => (most = Math.max(most, threadsNow())) });
  expect(r.bytes).toBe(8 * MiB);
  expect(most).toBe(before); // no worker thread was started
  await conn.disconnect();
});
