// Devices that fail: a method that throws, a promise that rejects, a call that never
// settles, nonsense results. The client gets an errno (or its own timeout through
// { signal: AbortSignal.timeout(...) }), and the connection and the server live on.
import { join } from 'node:path';
import { type Connection, open } from '@nbd/client';
import { Errno, NbdErrnoError } from '@nbd/protocol';
import { type Device, listen, MemoryDevice, type NbdServer } from '@nbd/server';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../support/peers.js';

const MiB = 1024 * 1024;
/** Offsets at or past this fail in the faulty devices below. */
const BAD = 4 * MiB;
let server: NbdServer | undefined;
let cleanup: (() => void) | undefined;
afterEach(async () => {
  await server?.close();
  cleanup?.();
  server = undefined;
});

async function serveDevice(device: Device): Promise<{ conn: Connection; path: string }> {
  const t = tempDir('nbd-faults-');
  cleanup = t.cleanup;
  const path = join(t.dir, 's.sock');
  server = await listen({ path }, [{ name: 'd', size: 8 * MiB, device }]);
  return { conn: await open({ path }, { exportName: 'd', metaContexts: ['base:allocation'] }), path };
}

/** The connection still works: a write and a read back in the good half. */
async function stillWorks(conn: Connection, path: string): Promise<void> {
  const data = new Uint8Array(4096).fill(0x3c);
  await conn.write(data, 8192);
  expect(await conn.read(8192, 4096)).toEqual(data);
  // And a second client is served too.
  await using other = await open({ path }, { exportName: 'd' });
  expect((await other.read(8192, 16))[0]).toBe(0x3c);
}

function faulty(fail: (what: string, offset: number) => unknown): Device {
  const mem = new MemoryDevice(8 * MiB);
  return {
    size: 8 * MiB,
    readAt: (b, o) => (o >= BAD ? fail('read', o) : mem.readAt(b, o)) as Promise<void>,
    writeAt: (b, o) => (o >= BAD ? fail('write', o) : mem.writeAt(b, o)) as Promise<void>,
    sync: () => fail('sync', 0) as Promise<void>,
    trim: (o, l) => (o >= BAD ? fail('trim', o) : mem.trim(o, l)) as Promise<void>,
    zero: (o, l) => (o >= BAD ? fail('zero', o) : mem.zero(o, l)) as Promise<void>,
    extents: (o, l, opts) => (o >= BAD ? fail('extents', o) : mem.extents(o, l, opts)) as never,
  };
}

async function errnoOf(p: Promise<unknown>): Promise<number> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(NbdErrnoError);
  return (e as NbdErrnoError).errno;
}

describe('faulty devices', () => {
  test('methods that throw: each request gets an errno (Node codes mapped, others EIO); the connection goes on', async () => {
    const { conn, path } = await serveDevice(
      faulty((what) => {
        if (what === 'write') throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
        if (what === 'trim') throw new NbdErrnoError(Errno.EPERM, 'not here');
        throw new Error(`${what} exploded`);
      }),
    );
    expect(await errnoOf(conn.read(BAD, 4096))).toBe(Errno.EIO);
    expect(await errnoOf(conn.write(new Uint8Array(4096), BAD))).toBe(Errno.ENOSPC);
    expect(await errnoOf(conn.trim(BAD, 4096))).toBe(Errno.EPERM);
    expect(await errnoOf(conn.zero(BAD, 4096))).toBe(Errno.EIO);
    expect(await errnoOf(conn.flush())).toBe(Errno.EIO);
    expect(await errnoOf(conn.blockStatus(BAD, 4096))).toBe(Errno.EIO);
    await stillWorks(conn, path);
    await conn.disconnect();
  });

  test('promises that reject: the same errnos, asynchronously', async () => {
    const { conn, path } = await serveDevice(
      faulty((what) =>
        Promise.reject(what === 'write' ? Object.assign(new Error('read-only fs'), { code: 'EROFS' }) : new Error('async failure')),
      ),
    );
    expect(await errnoOf(conn.read(BAD, 65536))).toBe(Errno.EIO);
    expect(await errnoOf(conn.write(new Uint8Array(4096), BAD))).toBe(Errno.EPERM);
    expect(await errnoOf(conn.flush())).toBe(Errno.EIO);
    await stillWorks(conn, path);
    await conn.disconnect();
  });

  test('a call that never settles: the client times out through its signal; other requests, the connection and the server go on', async () => {
    let stuck = 0;
    const { conn, path } = await serveDevice(
      faulty((_what, _o) => {
        stuck++;
        return new Promise(() => {}); // never settles (the connection's signal is ignored too)
      }),
    );
    const t0 = Date.now();
    const e = await conn.read(BAD, 4096, { signal: AbortSignal.timeout(300) }).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'NBD_ERR_ABORTED' });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(stuck).toBe(1);
    await stillWorks(conn, path);
    expect(conn.state).toBe('transmitting');
    // disconnect() waits for requests in flight; bounded by its own signal it closes at once.
    await conn.disconnect({ signal: AbortSignal.timeout(200) }).catch(() => undefined);
  });

  test('nonsense results: extents that are empty, negative or NaN, and a lend of the wrong size, answer EIO or are clipped, never crash', async () => {
    const mem = new MemoryDevice(8 * MiB);
    let mode = 0;
    const device: Device = {
      size: 8 * MiB,
      readAt: (b, o) => mem.readAt(b, o),
      lend: (_o, l) => (mode === 3 ? { views: [new Uint8Array(l + 1)], release: () => {} } : undefined),
      extents: () =>
        [
          [],
          [{ length: -5, flags: 0 }],
          [
            { length: Number.NaN, flags: 1 },
            { length: 4096, flags: 0 },
          ],
        ][mode] ?? [],
    };
    const { conn, path } = await serveDevice(device);
    for (mode = 0; mode < 3; mode++) expect(await errnoOf(conn.blockStatus(0, 4096))).toBe(Errno.EIO);
    mode = 3;
    expect(await errnoOf(conn.read(0, 4096))).toBe(Errno.EIO);
    mode = 4;
    expect(await conn.read(0, 16)).toEqual(new Uint8Array(16));
    await using other = await open({ path }, { exportName: 'd' });
    expect((await other.read(0, 16)).length).toBe(16);
    await conn.disconnect();
  });
});
