// Oldstyle serving (opt-in): the 152-byte greeting with the one export's size and
// flags, then transmission with simple replies. Clients that still speak it:
// libnbd (nbdinfo, nbdcopy) and qemu (qemu-img, qemu-io).
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Client } from '@nbd/client';
import { Magic, NbdInvalidArgumentError } from '@nbd/protocol';
import { listen, MemoryDevice, serve } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runOk, tempDir } from '../support/peers.js';
import { EACH_QEMU, qemuTool } from '../support/qemu.js';
import { MiB, type OurServer, RawClient, startOurServer } from './server-support.js';

const SIZE = 8 * MiB;

describe('oldstyle handshake', () => {
  const tmp = tempDir('nbd-oldstyle-');
  let srv: OurServer;
  let ro: OurServer;
  beforeAll(async () => {
    srv = await startOurServer([{ name: 'only', size: SIZE, device: new MemoryDevice(SIZE) }], { handshake: 'oldstyle' });
    ro = await startOurServer([{ name: 'ro', size: SIZE, device: new MemoryDevice(SIZE), readOnly: true }], { handshake: 'oldstyle' });
  });
  afterAll(async () => {
    await srv?.stop();
    await ro?.stop();
    tmp.cleanup();
  });

  it('greets with NBDMAGIC, the oldstyle magic, the size and the flags in 152 bytes', async () => {
    const c = await RawClient.connect(srv.socket);
    const g = await c.frame();
    expect(g).toEqual({ kind: 'greeting', greeting: { style: 'oldstyle', size: BigInt(SIZE), flags: expect.any(Number) } });
    expect(Magic.OLDSTYLE).toBe(0x00420281861253n);
    c.close();
  });

  it('nbdinfo sees the export, its size and read-only flag', async () => {
    const out = JSON.parse(await runOk('nbdinfo', ['--json', srv.uri()])) as {
      protocol: string;
      exports: { 'export-size': number; is_read_only: boolean }[];
    };
    expect(out.protocol).toBe('oldstyle');
    expect(out.exports[0]!['export-size']).toBe(SIZE);
    expect(out.exports[0]!.is_read_only).toBe(false);
    const rout = JSON.parse(await runOk('nbdinfo', ['--json', ro.uri()])) as { exports: { is_read_only: boolean }[] };
    expect(rout.exports[0]!.is_read_only).toBe(true);
  });

  it('nbdcopy writes and reads back the same bytes', async () => {
    const src = join(tmp.dir, 'src.img');
    const back = join(tmp.dir, 'back.img');
    const data = randomFillSync(Buffer.alloc(SIZE));
    writeFileSync(src, data);
    await runOk('nbdcopy', [src, srv.uri()]);
    await runOk('nbdcopy', [srv.uri(), back]);
    expect(readFileSync(back).equals(data)).toBe(true);
  });

  it.each(EACH_QEMU)('qemu-io %s writes a pattern and reads it back; qemu-img info sees the size', async (_version, q) => {
    await runOk(qemuTool(q, 'qemu-io'), ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', srv.uri()]);
    const read = await runOk(qemuTool(q, 'qemu-io'), ['-f', 'raw', '-c', 'read -P 0x5a 1M 64k', srv.uri()]);
    expect(read).toMatch(/read 65536\/65536 bytes/);
    const info = JSON.parse(await runOk(qemuTool(q, 'qemu-img'), ['info', '--output=json', '-f', 'raw', srv.uri()])) as {
      'virtual-size': number;
    };
    expect(info['virtual-size']).toBe(SIZE);
  });

  it('our client connects oldstyle too', async () => {
    const client = await Client.connect(srv.uri());
    expect(client.style).toBe('oldstyle');
    const conn = await client.go('');
    expect(conn.info.size).toBe(SIZE);
    expect(conn.structuredReplies).toBe(false);
    await conn.write(Uint8Array.of(1, 2, 3), 4096);
    expect(await conn.read(4096, 3)).toEqual(Uint8Array.of(1, 2, 3));
    await conn.disconnect();
  });

  it('refuses TLS with oldstyle (it has no STARTTLS) rather than serving plaintext: listen and serve reject', async () => {
    const exports = [{ name: '', size: SIZE, device: new MemoryDevice(SIZE) }];
    const opts = { handshake: 'oldstyle', tls: { psk: { alice: '00112233445566778899aabbccddeeff' } } } as const;
    await expect(listen({ path: join(tmp.dir, 'tls.sock') }, exports, opts)).rejects.toThrow(
      /oldstyle handshake has no STARTTLS, so it cannot serve tls mode 'require'/,
    );
    await expect(serve(new PassThrough(), exports, opts)).rejects.toThrow(NbdInvalidArgumentError);
    await expect(
      listen({ path: join(tmp.dir, 'off.sock') }, exports, { ...opts, tls: { mode: 'off' } }).then((s) => s.close()),
    ).resolves.toBe(undefined);
  });
});
