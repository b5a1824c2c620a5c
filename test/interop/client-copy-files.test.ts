// Files at both ends of a copy, against nbdcopy: a sparse file source is mapped with
// SEEK_DATA/SEEK_HOLE (its holes never read), a file destination keeps the source's
// holes, and so does a regular file on standard output (`nbd copy URI - > disk.img`).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copy } from '@nbd/copy';
import { expect, test } from 'vitest';
import { NBD_SHELL } from '../cli/support.js';
import { PATH, runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const { nbdkit, tmp, defer } = scoped('nbd-copy-files-');
const allocated = (path: string) => statSync(path).blocks * 512;

/** Bytes this process has read through read(2)-like calls so far (/proc/self/io's rchar). */
const bytesRead = () => Number(/^rchar:\s+(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

/** Where the sparse file holds data: four runs of 2 MiB. */
const DATA_AT = [0, 300 * MiB, GiB + 4096 * 16, 2 * GiB - 2 * MiB];

/** A 2 GiB file holding 8 MiB of data. */
function sparseFile(path: string): void {
  const fd = openSync(path, 'w');
  for (const at of DATA_AT) writeSync(fd, Buffer.alloc(2 * MiB, ((at / MiB) & 0xff) | 1), 0, 2 * MiB, at);
  closeSync(fd);
}

/** The 2 MiB at `at` of a file. */
function dataAt(path: string, at: number): Buffer {
  const b = Buffer.alloc(2 * MiB);
  const fd = openSync(path, 'r');
  readSync(fd, b, 0, b.length, at);
  closeSync(fd);
  return b;
}

function sh(script: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', script], { env: { ...process.env, PATH }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

test('a sparse file source: only its data is read (SEEK_DATA/SEEK_HOLE), the copy equals nbdcopy’s', async () => {
  const dir = tmp();
  const src = join(dir, 'sparse.img');
  sparseFile(src);
  const before = bytesRead();
  const r = await copy(src, 'null:');
  const read = bytesRead() - before;
  expect(read, 'bytes read for 8 MiB of data').toBeLessThan(32 * MiB);
  expect(r).toEqual({ bytes: 2 * GiB, zeroBytes: 2 * GiB - 8 * MiB });
  // Through a FileHandle the caller owns (left open), into a file: nbdcopy's bytes, holes kept.
  const fh = await openFile(src, 'r');
  defer(() => fh.close());
  await copy(fh, join(dir, 'ours.img'));
  await runOk('nbdcopy', [src, join(dir, 'theirs.img')]);
  // Not cmp (4 s of reading zeroes): the same size and data runs, and nothing else allocated.
  expect(statSync(join(dir, 'ours.img')).size).toBe(2 * GiB);
  for (const at of DATA_AT) expect(dataAt(join(dir, 'ours.img'), at).equals(dataAt(join(dir, 'theirs.img'), at))).toBe(true);
  expect(allocated(join(dir, 'ours.img'))).toBeLessThanOrEqual(allocated(join(dir, 'theirs.img')));
  expect((await fh.stat()).size).toBe(2 * GiB); // still open and usable
});

test('a regular file on standard output keeps the holes; a pipe gets every byte; what the shell writes next follows', async () => {
  const src = await nbdkit(['sparse-random', `${256 * MiB}`, 'seed=5', 'percent=5', 'runlength=1048576']);
  const dir = tmp();
  const [ours, theirs, piped, after] = ['ours.img', 'theirs.img', 'piped.img', 'after.img'].map((f) => join(dir, f)) as [
    string,
    string,
    string,
    string,
  ];
  expect(await sh(`${NBD_SHELL} copy '${src.uri}' - > '${ours}'`)).toEqual({ code: 0, stderr: '' });
  await runOk('nbdcopy', [src.uri, theirs]);
  await runOk('cmp', [ours, theirs]);
  expect(allocated(ours)).toBeLessThan(64 * MiB); // ~13 MiB of data; 256 MiB when every zero was written
  expect(await sh(`${NBD_SHELL} copy '${src.uri}' - | cat > '${piped}'`)).toEqual({ code: 0, stderr: '' });
  await runOk('cmp', [piped, theirs]);
  expect(await sh(`{ echo -n; ${NBD_SHELL} copy '${src.uri}' -; echo end; } > '${after}'`)).toEqual({ code: 0, stderr: '' });
  expect(statSync(after).size).toBe(256 * MiB + 4);
  const tail = Buffer.alloc(4);
  const fd = openSync(after, 'r');
  readSync(fd, tail, 0, 4, 256 * MiB);
  closeSync(fd);
  expect(tail.toString()).toBe('end\n');
});

test('a FIFO or a character device is copied as a stream, in order; its errors say where', async () => {
  const dir = tmp();
  const data = Buffer.alloc(3 * MiB + 123);
  for (let i = 0; i < MiB; i++) data[i] = (i * 13) & 0xff;
  writeFileSync(join(dir, 'src'), data);
  await runOk('mkfifo', [join(dir, 'fifo')]);
  // Into the FIFO (cat reads it out), then from it (cat writes it in).
  const reader = sh(`cat '${join(dir, 'fifo')}' > '${join(dir, 'out')}'`);
  await copy(join(dir, 'src'), join(dir, 'fifo'));
  await reader;
  expect(readFileSync(join(dir, 'out')).equals(data)).toBe(true);
  const writer = sh(`cat '${join(dir, 'src')}' > '${join(dir, 'fifo')}'`);
  const r = await copy(join(dir, 'fifo'), join(dir, 'back'));
  await writer;
  expect(r.bytes).toBe(data.length);
  expect(readFileSync(join(dir, 'back')).equals(data)).toBe(true);
  expect((await copy(join(dir, 'src'), '/dev/null')).bytes).toBe(data.length);
  await expect(copy(join(dir, 'src'), '/dev/full')).rejects.toThrow(/^writing \/dev\/full: offset 0, \d+ bytes: ENOSPC/);
});
