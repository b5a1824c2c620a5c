// copy() between local endpoints (files, null:, handles that misbehave): no NBD peer needed.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type FileHandle, open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { EXPORT_HANDLE, type ExportHandle, type ExportInfo } from '@nbd/client';
import { NbdSystemError } from '@nbd/node';
import { Errno, NbdAbortError, NbdErrnoError, NbdInvalidArgumentError, NbdOptionError, Option, OptionReply } from '@nbd/protocol';
import { afterEach, describe, expect, test } from 'vitest';
import { inContext, isPlaced } from './context.js';
import { copy } from './copy.js';
import { stdoutSink } from './stream-endpoints.js';
import { errorMessage, type FromCopyWorker, rebuild } from './workers.js';

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
      await expect(copy(src, stuck)).rejects.toThrow(
        new RegExp(`^writing file descriptor ${real.fd}: offset 0, 65536 bytes: ENOSPC \\(No space left on device\\): short write at 0$`),
      );
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

  test('onto itself (a FileHandle on the same file, a second name): refused before anything is truncated; allowSame copies in place', async () => {
    const dir = tmp();
    const src = join(dir, 'a');
    const data = Buffer.alloc(1 << 20, 3);
    writeFileSync(src, data);
    const fh = await openFile(src, 'r');
    try {
      await expect(copy(fh, join(dir, '.', 'a'))).rejects.toThrow(/^copy: the source and the destination are the same file/);
      await expect(copy(src, fh)).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    } finally {
      await fh.close();
    }
    expect(readFileSync(src).equals(data)).toBe(true);
    expect(await copy(src, src, { allowSame: true })).toEqual({ bytes: data.length, zeroBytes: 0 });
    expect(readFileSync(src).equals(data)).toBe(true);
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

/** An export of our own in memory: copy() takes any ExportHandle, not only Connection and MultiConnection. */
function memoryExport(data: Uint8Array, connectionCount: number) {
  let inFlight = 0;
  const seen = { most: 0, written: new Uint8Array(data.length), disconnected: false };
  const info: ExportInfo = {
    name: '',
    size: data.length,
    flags: 0,
    can: {
      read: true,
      write: true,
      flush: false,
      fua: false,
      trim: false,
      zero: false,
      fastZero: false,
      cache: false,
      df: false,
      multiConn: true,
      blockStatusPayload: false,
    },
    is: { readOnly: false, rotational: false },
  };
  const busy = async <T>(work: () => T): Promise<T> => {
    seen.most = Math.max(seen.most, ++inFlight);
    await new Promise((r) => setTimeout(r, 1));
    inFlight--;
    return work();
  };
  const unused = async (): Promise<never> => {
    throw new Error('not used by copy()');
  };
  const handle: ExportHandle = {
    [EXPORT_HANDLE]: true,
    info,
    metaContexts: new Map(),
    connectionCount,
    get inFlight() {
      return inFlight;
    },
    read: unused,
    readInto: unused,
    trim: unused,
    zero: unused,
    cache: unused,
    blockStatus: unused,
    readLent: (offset, length) => busy(() => ({ data: data.slice(offset, offset + length), release() {}, [Symbol.dispose]() {} })),
    write: (buf, offset) => busy(() => seen.written.set(buf, offset)),
    flush: async () => {},
    disconnect: async () => {
      seen.disconnected = true;
    },
    [Symbol.asyncDispose]: async () => {
      seen.disconnected = true;
    },
  };
  return { handle, seen };
}

describe('an ExportHandle as an endpoint', () => {
  test('any ExportHandle is copied from and to (not closed by the copy); the window grows with its connectionCount, whatever its class', async () => {
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < 16; i++) data.fill(i + 1, i << 16, (i + 1) << 16);
    const src = memoryExport(data, 3);
    const dst = memoryExport(new Uint8Array(data.length), 1);
    const opts = { requestSize: 64 * 1024, inFlight: 1 };
    expect(await copy(src.handle, dst.handle, opts)).toEqual({ bytes: data.length, zeroBytes: 0 });
    expect(data.equals(dst.seen.written)).toBe(true);
    expect(src.seen.most).toBe(3); // one request in flight per connection, three connections
    expect(src.seen.disconnected || dst.seen.disconnected).toBe(false);
  });

  test('an object shaped like one but without the brand is not an endpoint', async () => {
    const { [EXPORT_HANDLE]: _brand, ...lookAlike } = memoryExport(new Uint8Array(512), 1).handle;
    // @ts-expect-error: without the brand it is not an ExportHandle to the type-checker either
    await expect(copy(lookAlike, 'null:')).rejects.toThrow(/not an endpoint/);
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

describe('errors', () => {
  test('a failed request says where, keeping its class, errno and message; aborts stay as they are', () => {
    const e = new NbdErrnoError(Errno.EIO, 'bad sector', { offset: 4096 });
    const placed = inContext(e, { op: 'reading', endpoint: 'nbd://h/disk', offset: 1048576, length: 65536 }) as NbdErrnoError;
    expect(placed).toBeInstanceOf(NbdErrnoError);
    expect(placed).toMatchObject({ code: 'NBD_ERR_ERRNO', errno: Errno.EIO, errnoName: 'EIO', offset: 4096, cause: e });
    expect(placed.message).toBe('reading nbd://h/disk: offset 1048576, 65536 bytes: EIO (Input/output error): bad sector');
    expect(placed.stack).toMatch(/^NbdErrnoError: reading nbd:\/\/h\/disk/);
    expect(inContext(placed, { op: 'writing', endpoint: 'x' })).toBe(placed); // placed once only
    const bare = inContext(new NbdErrnoError(Errno.ESHUTDOWN), { op: 'writing', endpoint: 'out.img', offset: 0, length: 512 });
    expect((bare as Error).message).toBe('writing out.img: offset 0, 512 bytes: ESHUTDOWN (Cannot send after transport endpoint shutdown)');
    const abort = new NbdAbortError();
    expect(inContext(abort, { op: 'reading', endpoint: 'x' })).toBe(abort);
  });

  test("a worker thread's error crosses the thread boundary with its class, code and fields", () => {
    const node = Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), { code: 'ENOENT', errno: -2, path: '/x' });
    const cases: Error[] = [
      new NbdErrnoError(Errno.ENOSPC, 'full', { offset: 512 }),
      new NbdOptionError(Option.GO, OptionReply.ERR_UNKNOWN, 'no such export'),
      new NbdAbortError(),
      new NbdSystemError('open: EACCES', 'EACCES', 13),
      new NbdInvalidArgumentError('bad'),
      node,
      inContext(new NbdErrnoError(Errno.EIO), { op: 'reading', endpoint: 'a', offset: 0, length: 1 }) as Error,
    ];
    for (const e of cases) {
      const m = structuredClone(errorMessage(e)) as Extract<FromCopyWorker, { type: 'error' }>;
      const back = rebuild(m.error);
      expect(back).toBeInstanceOf(e.constructor);
      expect(back.name).toBe(e.name);
      expect(back.message).toBe(e.message);
      expect({ ...back }).toEqual({ ...e });
      expect(isPlaced(back)).toBe(isPlaced(e));
    }
  });
});
