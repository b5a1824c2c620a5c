// Our server with `threads`: connections served on worker threads over shared
// devices, checked with nbdcopy (4 connections), nbdinfo, qemu-img and libnbd;
// lame-duck shutdown, preconnect in the main thread, and a worker that dies.
// Imports the built dist/: worker threads load JavaScript, not the TS sources.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@nbd/client';
import { Errno, NbdInvalidArgumentError } from '@nbd/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../packages/devices/dist/index.js';
import { type ConnectionInfo, type Device, type Export, listenAndServe, type ServeOptions } from '../../packages/server/dist/index.js';
import { closing } from '../support/closing.js';
import { run, runOk, runPython, tempDir } from '../support/peers.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SIZE = 32 * MiB;

/** Our server from dist/ on worker threads (2 unless `opts` says otherwise). */
const start = (exports: Export[], opts: ServeOptions = {}) => startOurServer(exports, { threads: 2, ...opts }, listenAndServe);

describe('worker threads with a FileDevice', () => {
  const keep = closing('all');
  const tmp = tempDir('nbd-threads-data-');
  const src = join(tmp.dir, 'src.img');
  const img = join(tmp.dir, 'served.img');
  let srv: OurServer;

  beforeAll(async () => {
    const data = Buffer.alloc(SIZE);
    randomFillSync(data, 0, 10 * MiB);
    randomFillSync(data, 20 * MiB);
    writeFileSync(src, data);
    writeFileSync(img, Buffer.alloc(SIZE));
    srv = await start([{ name: '', size: SIZE, device: keep(await FileDevice.open(img)) }]);
  });
  afterAll(async () => {
    await srv?.stop();
    tmp.cleanup();
  });

  it('nbdcopy in and out over 4 connections is byte-for-byte identical', async () => {
    await runOk('nbdcopy', [src, srv.uri()]);
    const out = join(tmp.dir, 'out.img');
    await runOk('nbdcopy', [srv.uri(), out]);
    await runOk('cmp', [src, out]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri()]);
  });

  it('nbdinfo sees the export, multi-conn included', async () => {
    const info = JSON.parse(await runOk('nbdinfo', ['--json', srv.uri()]));
    expect(info.exports[0]['export-size']).toBe(SIZE);
    expect(info.exports[0].can_multi_conn).toBe(true);
  });

  it('a write on one connection is read back on another after flush (libnbd, two connections)', async () => {
    const r = await runPython(
      [
        'import nbd, sys',
        'a = nbd.NBD(); a.connect_uri(sys.argv[1])',
        'b = nbd.NBD(); b.connect_uri(sys.argv[1])',
        'a.pwrite(b"threads!" * 512, 5 * 4096); a.flush()',
        'print(bytes(b.pread(4096, 5 * 4096)[:16]).decode())',
        'a.shutdown(); b.shutdown()',
      ].join('\n'),
      [srv.uri()],
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('threads!threads!');
  });
});

/** A device whose worker-thread side comes from fixtures/thread-devices.mjs. */
function testDevice(kind: 'crash' | 'slow'): Device {
  const module = new URL('./fixtures/thread-devices.mjs', import.meta.url).href;
  return { readAt: () => {}, share: () => ({ module, args: { size: MiB, kind } }) };
}

describe('worker-thread lifecycle', () => {
  const keep = closing();
  let srv: OurServer | undefined;
  const tmp = tempDir('nbd-threads-life-');
  const img = join(tmp.dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(MiB));
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });
  afterAll(() => tmp.cleanup());

  it('serves TCP connections too (nbdinfo and qemu-io over nbd://127.0.0.1)', async () => {
    const ac = new AbortController();
    let port = 0;
    const up = Promise.withResolvers<void>();
    const done = listenAndServe({ host: '127.0.0.1', port: 0 }, [{ name: 'disk', size: MiB, device: keep(await FileDevice.open(img)) }], {
      threads: 2,
      signal: ac.signal,
      onListen: (a) => {
        if (typeof a !== 'string') port = a.port;
        up.resolve();
      },
    });
    await Promise.race([up.promise, done]);
    try {
      const uri = `nbd://127.0.0.1:${port}/disk`;
      expect((await runOk('nbdinfo', ['--size', uri])).trim()).toBe(String(MiB));
      const io = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4096 8192', '-c', 'read -P 0x5a 4096 8192', uri]);
      expect(io).not.toMatch(/Pattern verification failed/);
      expect(io).toMatch(/read 8192\/8192 bytes/);
    } finally {
      ac.abort();
      await done;
    }
  });

  it('a request in flight gets ESHUTDOWN on abort, and listenAndServe settles once the worker closed', async () => {
    srv = await start([{ name: '', size: MiB, device: testDevice('slow') }]);
    const conn = await (await Client.connect(srv.uri())).go('');
    const inFlight = conn.read(0, 4096);
    await new Promise((r) => setTimeout(r, 100)); // the worker has it
    const stopping = srv.stop();
    srv = undefined;
    await expect(inFlight).rejects.toMatchObject({ errno: Errno.ESHUTDOWN });
    await stopping;
  });

  it('preconnect runs in the main thread and can refuse a client', async () => {
    let calls = 0;
    srv = await start([{ name: '', size: MiB, device: keep(await FileDevice.open(img)) }], { preconnect: () => ++calls > 1 });
    expect((await run('nbdinfo', ['--size', srv.uri()])).code).not.toBe(0);
    expect((await runOk('nbdinfo', ['--size', srv.uri()])).trim()).toBe(String(MiB));
    expect(calls).toBe(2);
  });

  it('preconnect runs again once TLS is up, on the main thread: a PSK user it refuses cannot write (issue 19)', async () => {
    const keys = join(tmp.dir, 'keys.psk');
    await runOk('psktool', ['-u', 'alice', '-p', keys]);
    await runOk('psktool', ['-u', 'mallory', '-p', keys]);
    const seen: ConnectionInfo[] = [];
    srv = await start([{ name: 'disk', size: MiB, device: keep(await FileDevice.open(img)) }], {
      tls: { mode: 'require', pskFile: keys },
      preconnect: (info) => {
        seen.push(info);
        return info.tls?.psk !== 'mallory';
      },
    });
    const uri = (user: string) => `nbds+unix://${user}@/disk?socket=${srv!.socket}&tls-psk-file=${keys}`;
    const src = join(tmp.dir, 'ones.img');
    writeFileSync(src, Buffer.alloc(MiB, 0x11));
    expect((await run('nbdcopy', [src, uri('mallory')])).code).not.toBe(0);
    expect(readFileSync(img).includes(0x11)).toBe(false);
    await runOk('nbdcopy', [src, uri('alice')]);
    expect(readFileSync(img).every((b) => b === 0x11)).toBe(true);
    expect(new Set(seen.map((i) => i.tls?.psk))).toEqual(new Set([undefined, 'mallory', 'alice']));
  });

  it('a worker that dies loses its connection only; another worker takes its place', async () => {
    const errors: string[] = [];
    srv = await start([{ name: '', size: MiB, device: testDevice('crash') }], {
      threads: 1,
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: (m) => errors.push(m) },
    });
    const read = (offset: number) =>
      runPython(`import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint(h.pread(4, ${offset}).hex())`, [srv!.uri()]);
    const crashed = await read(0);
    expect(crashed.code).not.toBe(0);
    // The client sees the close before the main thread hears of the worker's exit.
    for (let i = 0; i < 50 && !errors.some((e) => /worker thread died/.test(e)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(errors.join('\n')).toMatch(/worker thread died/);
    let after = await read(4096);
    for (let i = 0; i < 50 && after.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 100)); // the replacement may still be starting
      after = await read(4096);
    }
    expect(after.stdout.trim()).toBe('07070707');
  });

  it('refuses devices without share() and a bad thread count, before listening, with NbdInvalidArgumentError', async () => {
    const plain: Export = { name: '', size: MiB, device: { readAt: () => {} } };
    await expect(listenAndServe({ path: join(tmp.dir, 'a.sock') }, [plain], { threads: 2 })).rejects.toThrow(/share\(\)/);
    await expect(listenAndServe({ path: join(tmp.dir, 'a.sock') }, [plain], { threads: 2 })).rejects.toThrow(NbdInvalidArgumentError);
    const shared: Export = { name: '', size: MiB, device: keep(await FileDevice.open(img)) };
    await expect(listenAndServe({ path: join(tmp.dir, 'c.sock') }, [shared], { threads: 1.5 })).rejects.toThrow(NbdInvalidArgumentError);
  });

  it('the open hook runs on the main thread and a worker serves the device it returns; one without share() is refused per client', async () => {
    const seen: string[] = [];
    let unshareable = false;
    srv = await start([{ name: 'disk', size: MiB, device: keep(await FileDevice.open(img)) }], {
      open: async (ctx) => {
        seen.push(`${ctx.export.name} ${ctx.readOnly}`);
        return unshareable ? { readAt: () => {} } : FileDevice.open(img);
      },
    });
    const io = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 8192 4096', srv.uri('disk')]);
    expect(io).toMatch(/wrote 4096\/4096 bytes/);
    expect(
      readFileSync(img)
        .subarray(8192, 8192 + 4096)
        .every((b) => b === 0x3c),
    ).toBe(true);
    expect(seen).toContain('disk false');
    unshareable = true;
    expect((await run('nbdinfo', ['--size', srv.uri('disk')])).code).not.toBe(0);
    const client = await Client.connect(srv.uri());
    await expect(client.go('disk')).rejects.toThrow(/no share\(\), which threads need/);
    await client.abort().catch(() => {});
  });

  it('oldstyle is served on worker threads too (nbdinfo)', async () => {
    srv = await start([{ name: '', size: MiB, device: keep(await FileDevice.open(img)) }], { handshake: 'oldstyle' });
    expect((await runOk('nbdinfo', ['--size', srv.uri()])).trim()).toBe(String(MiB));
  });

  it('a listen failure stops the workers it started', async () => {
    const shared: Export = { name: '', size: MiB, device: keep(await FileDevice.open(img)) };
    const threadsNow = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    const before = threadsNow();
    await expect(listenAndServe({ path: join(tmp.dir, 'missing-dir', 'x.sock') }, [shared], { threads: 2 })).rejects.toThrow(/listen E/);
    expect(threadsNow()).toBeLessThanOrEqual(before);
  });
});
