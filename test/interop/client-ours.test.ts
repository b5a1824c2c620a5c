// @nbd/client against @nbd/server across every feature, including extended
// headers (which no Debian peer speaks yet).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, connectMulti } from '@nbd/client';
import { copy } from '@nbd/copy';
import { AllocationState } from '@nbd/protocol';
import { listenAndServe, MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unixUri } from '../support/peers.js';

const MiB = 1024 * 1024;
let dir: string;
let sock: string;
const stop = new AbortController();
let served: Promise<void>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'nbd-ours-'));
  sock = join(dir, 's.sock');
  const listening = new Promise<void>((resolve) => {
    served = listenAndServe(
      { path: sock },
      [
        { name: 'disk', description: 'a memory disk', size: 16 * MiB, device: new MemoryDevice(16 * MiB) },
        { name: 'ro', size: MiB, device: new MemoryDevice(MiB), readOnly: true },
      ],
      { signal: stop.signal, onListen: () => resolve() },
    );
  });
  await listening;
});
afterAll(async () => {
  stop.abort();
  await served?.catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe.each([
  { label: 'structured replies', go: {} },
  { label: 'simple replies', go: { structuredReplies: false } },
  { label: 'extended headers', go: { extendedHeaders: true } },
])('our server, $label', ({ go }) => {
  test('handshake, every command, block status', async () => {
    const c = await Client.connect(unixUri(sock, 'disk'));
    expect((await c.list()).map((e) => e.name)).toEqual(['disk', 'ro']);
    const info = await c.info();
    expect(info).toMatchObject({ name: 'disk', size: 16 * MiB, description: 'a memory disk' });
    const structured = (go as { structuredReplies?: boolean }).structuredReplies !== false;
    const conn = await c.go('disk', { ...go, metaContexts: structured ? ['base:allocation'] : [] });
    expect(conn.extendedHeaders).toBe((go as { extendedHeaders?: boolean }).extendedHeaders === true);
    expect(conn.structuredReplies).toBe(structured);
    const data = new Uint8Array(2 * MiB + 4096).map((_, i) => (i * 17 + 3) & 0xff);
    await conn.write(data, MiB, { fua: conn.info.can.fua });
    const [a, b] = await Promise.all([conn.read(MiB, data.length), conn.read(0, 4096)]);
    expect(Buffer.from(a).equals(Buffer.from(data))).toBe(true);
    expect(b.every((x) => x === 0)).toBe(true);
    if (conn.info.can.flush) await conn.flush();
    if (conn.info.can.zero) {
      await conn.zero(MiB, 4096, { noHole: true });
      expect((await conn.read(MiB, 4096)).every((x) => x === 0)).toBe(true);
    }
    if (conn.info.can.trim) await conn.trim(8 * MiB, MiB);
    if (conn.info.can.cache) await conn.cache(0, MiB);
    if (structured) {
      const ext = (await conn.blockStatus(0, 16 * MiB)).get('base:allocation')!;
      expect(ext.length).toBeGreaterThan(0);
      const at = ext.find((e) => e.offset <= 2 * MiB && 2 * MiB < e.offset + e.length)!;
      expect(at.flags & AllocationState.HOLE).toBe(0);
    }
    await expect(conn.read(16 * MiB - 1, 2)).rejects.toMatchObject({
      code: 'NBD_ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/beyond the end/),
    });
    await conn.disconnect();
  });
});

test('read-only export and multi-conn copy through our server', async () => {
  const ro = await (await Client.connect(unixUri(sock, 'ro'))).go();
  expect(ro.info.is.readOnly).toBe(true);
  await expect(ro.write(new Uint8Array(1), 0)).rejects.toMatchObject({
    code: 'NBD_ERR_INVALID_ARGUMENT',
    message: expect.stringMatching(/read-only/),
  });
  await ro.disconnect();

  const m = await connectMulti(unixUri(sock, 'disk'), { connections: 2 });
  expect(m.connections.length).toBe(m.info.can.multiConn ? 2 : 1);
  await m.write(new Uint8Array(MiB).fill(9), 0);
  await m.flush();
  await m.disconnect();
  const { dir: d2, cleanup } = {
    dir: mkdtempSync(join(tmpdir(), 'nbd-ours-copy-')),
    cleanup: () => rmSync(d2, { recursive: true, force: true }),
  };
  try {
    const r = await copy(unixUri(sock, 'disk'), join(d2, 'out.img'), { connections: 2 });
    expect(r.bytes).toBe(16 * MiB);
  } finally {
    cleanup();
  }
});

test('await using: a MultiConnection disconnects every connection at the end of its block', async () => {
  let conns: readonly { state: string }[] = [];
  {
    await using m = await connectMulti({ path: sock }, { exportName: 'disk', connections: 2 });
    conns = m.connections;
    await m.write(new Uint8Array(4096).fill(3), 0);
    expect(conns.every((c) => c.state === 'transmitting')).toBe(true);
  }
  expect(conns.map((c) => c.state)).toEqual(conns.map(() => 'closed'));
});

test('small read() answers are copies, never views of a read arena that later replies overwrite', async () => {
  const conn = await (await Client.connect(unixUri(sock, 'disk'))).go('disk');
  const fill = (i: number) => new Uint8Array(4096).fill(i + 1);
  await Promise.all(Array.from({ length: 64 }, (_, i) => conn.write(fill(i), i * 4096)));
  // A large answer first makes this connection read into a large arena (a Buffer).
  expect((await conn.read(0, 3 * MiB)).length).toBe(3 * MiB);
  for (let round = 0; round < 4; round++) {
    const small = await Promise.all(Array.from({ length: 64 }, (_, i) => conn.read(i * 4096, 4096)));
    for (const [i, b] of small.entries()) {
      expect(b.buffer.byteLength).toBe(4096); // its own memory
      expect(b.every((x) => x === i + 1)).toBe(true);
    }
  }
  await conn.disconnect();
});
