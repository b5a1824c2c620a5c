// Server options and lifecycle: preconnect, per-connection open/close,
// maxConnections, device errors mapped to errnos, and graceful shutdown
// (ESHUTDOWN to in-flight requests, ERR_SHUTDOWN in the handshake).

import { Command, Errno, encodeClientFlags, encodeOptionRequest, encodeRequest, NbdErrnoError, OptionReply } from '@nbd/protocol';
import { type Device, MemoryDevice, serve } from '@nbd/server';
import { afterEach, describe, expect, it } from 'vitest';
import { run, runOk, runPython } from '../support/peers.js';
import { MiB, type OurServer, RawClient, startOurServer } from './server-support.js';

let srv: OurServer | undefined;
afterEach(async () => {
  await srv?.stop();
  srv = undefined;
});

describe('server options', () => {
  it('preconnect can refuse a client before the greeting', async () => {
    let calls = 0;
    srv = await startOurServer(undefined, { preconnect: () => ++calls > 1 });
    expect((await run('nbdinfo', ['--size', srv.uri()])).code).not.toBe(0);
    expect((await runOk('nbdinfo', ['--size', srv.uri()])).trim()).toBe(String(64 * MiB));
    expect(calls).toBe(2);
  });

  it('open gives each connection its own device, closed afterwards', async () => {
    const opened: string[] = [];
    let closed = 0;
    const base = new MemoryDevice(MiB);
    srv = await startOurServer([{ name: 'x', size: MiB, device: base }], {
      open: ({ export: e, readOnly }) => {
        opened.push(`${e.name}:${readOnly}`);
        return { readAt: (b: Uint8Array) => void b.fill(9), close: () => void closed++ } satisfies Device;
      },
    });
    const r = await runPython(
      `import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint(h.pread(4, 0).hex(), h.is_read_only())\nh.shutdown()`,
      [srv.uri('x')],
    );
    expect(r.stdout.trim()).toBe('09090909 True');
    await new Promise((res) => setTimeout(res, 100));
    expect(opened).toEqual(['x:false']);
    expect(closed).toBe(1);
  });

  it('maxConnections refuses connections beyond the limit', async () => {
    srv = await startOurServer(undefined, { maxConnections: 1 });
    const first = await RawClient.connect(srv.socket);
    expect((await first.frame())?.kind).toBe('greeting');
    const second = await RawClient.connect(srv.socket);
    expect(await second.frame()).toBeNull();
    first.close();
    await new Promise((res) => setTimeout(res, 100));
    expect((await runOk('nbdinfo', ['--size', srv.uri()])).trim()).toBe(String(64 * MiB));
  });

  it('device errors become errnos: NbdError keeps its own, Node codes map, others are EIO', async () => {
    const failing: Device = {
      readAt: (_b, offset) => {
        if (offset === 0) throw new NbdErrnoError(Errno.ENOSPC, 'full');
        if (offset === 4096) return Promise.reject(Object.assign(new Error('ro'), { code: 'EROFS' }));
        throw new Error('boom');
      },
    };
    srv = await startOurServer([{ name: '', size: MiB, device: failing }]);
    const r = await runPython(
      `import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for off in (0, 4096, 8192):
    try:
        h.pread(512, off)
        print('ok')
    except nbd.Error as e:
        print(e.errnum)
h.shutdown()`,
      [srv.uri()],
    );
    expect(r.stdout.trim().split('\n')).toEqual([String(Errno.ENOSPC), String(Errno.EPERM), String(Errno.EIO)]);
  });
});

describe('graceful shutdown', () => {
  it('in-flight requests get ESHUTDOWN, the connection closes, and listenAndServe settles', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow: Device = { readAt: async () => gate };
    srv = await startOurServer([{ name: '', size: MiB, device: slow }]);
    const c = await RawClient.connect(srv.socket);
    await c.frame();
    c.write(encodeClientFlags(1));
    c.write(encodeOptionRequest({ kind: 'structured-reply' }));
    await c.frame();
    c.write(encodeOptionRequest({ kind: 'go', name: '', requests: [] }));
    for (;;) {
      const f = await c.frame();
      if (f?.kind === 'option-reply' && f.type === OptionReply.ACK) break;
    }
    c.decoder.startTransmission(false);
    c.write(encodeRequest({ type: Command.READ, flags: 0, cookie: 1n, offset: 0n, length: 512n }));
    await new Promise((r) => setTimeout(r, 50));
    const stopping = srv.stop();
    release();
    const f = await c.frame();
    expect(f).toMatchObject({ kind: 'chunk', header: { cookie: 1n } });
    expect(f?.kind === 'chunk' && new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0)).toBe(Errno.ESHUTDOWN);
    expect(await c.waitClosed()).toBe(true);
    await stopping;
    srv = undefined;
  });

  it('a client in the handshake gets ERR_SHUTDOWN, then is closed', async () => {
    srv = await startOurServer();
    const c = await RawClient.connect(srv.socket);
    await c.frame();
    c.write(encodeClientFlags(1));
    await new Promise((r) => setTimeout(r, 50));
    const stopping = srv.stop();
    c.write(encodeOptionRequest({ kind: 'list' }));
    const f = await c.frame();
    expect(f).toMatchObject({ kind: 'option-reply', type: OptionReply.ERR_SHUTDOWN });
    expect(await c.waitClosed()).toBe(true);
    await stopping;
    srv = undefined;
  });

  it('serve() runs over any connected Duplex and settles when the client leaves', async () => {
    const { createServer } = await import('node:net');
    const { join } = await import('node:path');
    const { tempDir } = await import('../support/peers.js');
    const t = tempDir();
    const path = join(t.dir, 's');
    const served: Promise<void>[] = [];
    const server = createServer((sock) => served.push(serve(sock, [{ name: '', size: MiB, device: new MemoryDevice(MiB) }])));
    await new Promise<void>((r) => server.listen(path, r));
    expect((await runOk('nbdinfo', ['--size', `nbd+unix:///?socket=${path}`])).trim()).toBe(String(MiB));
    await Promise.all(served);
    expect(served).toHaveLength(1);
    await new Promise<void>((r) => server.close(() => r()));
    t.cleanup();
  });
});
