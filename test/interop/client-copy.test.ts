// copy() (our nbdcopy) between nbdkit exports and files, checked against nbdcopy itself.
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { open } from '@nbd/client';
import { copy } from '@nbd/copy';
import { runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';

const MiB = 1024 * 1024;
const { nbdkit, tmp, defer } = scoped('nbd-copy-');
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('sparse export → file: same bytes as nbdcopy, holes left as holes, progress reported', async () => {
  const src = await nbdkit(['sparse-random', `size=${32 * MiB}`, 'seed=7', 'percent=20', 'runlength=262144']);
  const dir = tmp();
  const ours = join(dir, 'ours.img');
  const theirs = join(dir, 'theirs.img');
  const seen: number[] = [];
  const r = await copy(src.uri, ours, { onProgress: (p) => seen.push(p.done) });
  await runOk('nbdcopy', [src.uri, theirs]);
  expect(sha(ours)).toBe(sha(theirs));
  expect(statSync(ours).size).toBe(32 * MiB);
  expect(r.bytes).toBe(32 * MiB);
  expect(r.zeroBytes).toBeGreaterThan(16 * MiB); // ~80 % zero
  expect(statSync(ours).blocks * 512).toBeLessThan(20 * MiB); // sparse on disk
  expect(seen.at(-1)).toBe(32 * MiB);
  expect(seen.every((v, i) => i === 0 || v >= seen[i - 1]!)).toBe(true);
});

test('pattern export → memory export (multi-conn), verified by reading back', async () => {
  const src = await nbdkit(['pattern', `size=${48 * MiB}`]);
  const dst = await nbdkit(['memory', `size=${64 * MiB}`]);
  const r = await copy(src.uri, dst.uri, { connections: 2, requestSize: MiB });
  expect(r.bytes).toBe(48 * MiB);
  const conn = await open(dst.uri);
  for (const off of [0, 7 * MiB + 4096, 48 * MiB - 4096]) {
    const d = await conn.read(off, 4096);
    expect(new DataView(d.buffer, d.byteOffset).getBigUint64(8)).toBe(BigInt(off + 8));
  }
  expect((await conn.read(48 * MiB, 4096)).every((b) => b === 0)).toBe(true);
  await conn.disconnect();
});

test('file → export (FileHandle and path), zero blocks become zero requests; destination too small refused', async () => {
  const dir = tmp();
  const file = join(dir, 'src.img');
  const data = Buffer.alloc(8 * MiB);
  for (let i = 0; i < 4 * MiB; i++) data[i] = (i * 31) & 0xff; // second half zero
  writeFileSync(file, data);
  const dst = await nbdkit(['memory', `size=${8 * MiB}`]);
  const fh = await openFile(file, 'r');
  defer(() => fh.close());
  const r = await copy(fh, dst.uri);
  expect(r.zeroBytes).toBeGreaterThanOrEqual(4 * MiB);
  const back = join(dir, 'back.img');
  await runOk('nbdcopy', [dst.uri, back]);
  expect(sha(back)).toBe(sha(file));
  // nbdkit memory keeps zeroed ranges sparse: nbdinfo --map sees a hole in the second half
  expect(await runOk('nbdinfo', ['--map', dst.uri])).toMatch(/hole/);

  const small = await nbdkit(['memory', `size=${MiB}`]);
  await expect(copy(file, small.uri)).rejects.toThrow(/smaller than the source/);
});

test('export → null: and an aborted copy rejects', async () => {
  const src = await nbdkit(['pattern', `size=${16 * MiB}`]);
  expect((await copy(src.uri, 'null:', { sparse: false })).bytes).toBe(16 * MiB);
  const ac = new AbortController();
  const p = copy(src.uri, 'null:', { signal: ac.signal, inFlight: 1, connections: 1, requestSize: 4096, onProgress: (x) => x.done > MiB && ac.abort(new Error('stop')) });
  await expect(p).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED', cause: new Error('stop') });
});
