// copy() between local endpoints (files, null:, handles that misbehave): no NBD peer needed.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type FileHandle, open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { copy } from './copy.js';
import { stdoutSink } from './stream-endpoints.js';

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'nbd-copy-unit-'));
  dirs.push(d);
  return d;
}

describe('copy between files', () => {
  test('file → file keeps the bytes, leaves zero blocks as holes, and truncates to the size', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    const data = Buffer.alloc(3 * 1024 * 1024);
    data.fill(7, 0, 1024 * 1024);
    writeFileSync(src, data);
    const r = await copy(src, join(dir, 'b'), { requestSize: 256 * 1024 });
    expect(r).toEqual({ bytes: data.length, zeroBytes: 2 * 1024 * 1024 });
    expect(readFileSync(join(dir, 'b')).equals(data)).toBe(true);
    expect(statSync(join(dir, 'b')).blocks * 512).toBeLessThan(2 * 1024 * 1024);
  });

  test('a destination whose writes make no progress rejects instead of looping forever', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    writeFileSync(src, Buffer.alloc(64 * 1024, 1));
    const real = await openFile(join(dir, 'b'), 'w');
    const stuck = new Proxy(real, {
      get: (t, k) => (k === 'write' ? async () => ({ bytesWritten: 0, buffer: new Uint8Array(0) }) : Reflect.get(t, k, t)),
    }) as FileHandle;
    try {
      await expect(copy(src, stuck)).rejects.toThrow(/the write made no progress \(0 bytes written\)/);
    } finally {
      await real.close();
    }
  });

  test('null: is a destination only; bad options are the caller’s mistake', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'a'), Buffer.alloc(10));
    await expect(copy('null:', join(dir, 'b'))).rejects.toThrow(/null: is a destination only/);
    await expect(copy(join(dir, 'a'), 'null:', { requestSize: 0 })).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(copy(join(dir, 'a'), 'null:', { threads: 1.5 })).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    expect(await copy(join(dir, 'a'), 'null:')).toEqual({ bytes: 10, zeroBytes: 10 });
  });

  test('an aborted copy rejects with NbdAbortError, the reason as cause', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'a'), Buffer.alloc(1024));
    const reason = new Error('no');
    await expect(copy(join(dir, 'a'), 'null:', { signal: AbortSignal.abort(reason) })).rejects.toMatchObject({
      code: 'NBD_ERR_ABORTED',
      cause: reason,
    });
  });
});

describe('standard output as a sink', () => {
  test('writes issued out of order leave in offset order; zero ranges are written as zero bytes', async () => {
    const out = new PassThrough();
    const got: Buffer[] = [];
    out.on('data', (b: Buffer) => got.push(b));
    const sink = stdoutSink(out);
    expect(sink.sequential).toBe(true);
    const done = [sink.write(Buffer.from('cc'), 4), sink.zero(2, 2), sink.write(Buffer.from('aa'), 0)];
    await Promise.all(done);
    await sink.finish(6, true);
    expect(Buffer.concat(got).toString('latin1')).toBe('aa\0\0cc');
  });
});
