// copy() (our nbdcopy) between nbdkit exports and files, checked against nbdcopy itself.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { open } from '@nbd/client';
import { copy } from '@nbd/copy';
import { expect, test } from 'vitest';
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
  const p = copy(src.uri, 'null:', {
    signal: ac.signal,
    inFlight: 1,
    connections: 1,
    requestSize: 4096,
    onProgress: (x) => x.done > MiB && ac.abort(new Error('stop')),
  });
  await expect(p).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED', cause: new Error('stop') });
});

/** Runs examples/client-copy (the built one) with `args`, `input` on its stdin; resolves with its stdout. */
function copyCli(args: string[], cwd: string, input?: string): Promise<Buffer> {
  const { promise, resolve, reject } = Promise.withResolvers<Buffer>();
  const child = spawn(process.execPath, [fileURLToPath(new URL('../../examples/dist/client-copy.js', import.meta.url)), ...args], {
    cwd,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => (err += b));
  child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`client-copy exited ${code}: ${err}`))));
  if (input !== undefined) {
    child.stdin!.on('error', () => {}); // EPIPE when the copy stops early (a destination too small)
    createReadStream(input).pipe(child.stdin!);
  }
  return promise;
}

test('- is standard output as a destination (same bytes as nbdcopy to -), and no file named - appears', async () => {
  const src = await nbdkit(['sparse-random', `size=${16 * MiB}`, 'seed=3', 'percent=30', 'runlength=65536']);
  const dir = tmp();
  const ours = await copyCli([src.uri, '-'], dir);
  const theirs = join(dir, 'theirs.img');
  await runOk('nbdcopy', [src.uri, theirs]); // what nbdcopy writes to a file is what it writes to -
  expect(ours.length).toBe(16 * MiB);
  expect(createHash('sha256').update(ours).digest('hex')).toBe(sha(theirs));
  expect(existsSync(join(dir, '-'))).toBe(false);
});

test('- is standard input as a source: read to its end, written to the export', async () => {
  const dir = tmp();
  const file = join(dir, 'in.img');
  const data = Buffer.alloc(5 * MiB + 12345);
  for (let i = 0; i < 3 * MiB; i++) data[i] = (i * 13 + 1) & 0xff; // the rest zero
  writeFileSync(file, data);
  const dst = await nbdkit(['memory', `size=${8 * MiB}`]);
  await copyCli(['-', dst.uri], dir, file);
  const back = join(dir, 'back.img');
  await runOk('nbdcopy', [dst.uri, back]);
  expect(readFileSync(back).subarray(0, data.length).equals(data)).toBe(true);
  const small = await nbdkit(['memory', `size=${MiB}`]);
  await expect(copyCli(['-', small.uri], dir, file)).rejects.toThrow(/smaller than the source/);
});

test('URL endpoints: nbd+unix: as a URL, and a file: URL as a file', async () => {
  const src = await nbdkit(['pattern', `size=${4 * MiB}`]);
  const dir = tmp();
  const out = join(dir, 'out.img');
  const r = await copy(new URL(src.uri), pathToFileURL(out));
  expect(r.bytes).toBe(4 * MiB);
  const conn = await open(src.uri);
  expect(
    readFileSync(out)
      .subarray(8192, 8200)
      .equals(Buffer.from(await conn.read(8192, 8))),
  ).toBe(true);
  await conn.disconnect();
});
