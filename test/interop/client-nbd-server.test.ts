// @nbd/client against the reference nbd-server 3.24 with several named exports.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@nbd/client';
import { NbdOptionError } from '@nbd/protocol';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type Peer, startNbdServer, tempDir, unixUri } from '../support/peers.js';

const MiB = 1024 * 1024;
let tmp: ReturnType<typeof tempDir>;
let peer: Peer;

beforeAll(async () => {
  tmp = tempDir('nbd-ref-');
  const one = join(tmp.dir, 'one.img');
  const two = join(tmp.dir, 'two.img');
  writeFileSync(one, Buffer.alloc(4 * MiB));
  writeFileSync(two, Buffer.alloc(2 * MiB, 0x77));
  peer = await startNbdServer({ one: { file: one }, two: { file: two, readOnly: true } });
});
afterAll(async () => {
  await peer?.stop();
  tmp?.cleanup();
});

test('list and info of named exports', async () => {
  const c = await Client.connect(peer.uri);
  expect(c.style).toBe('fixed-newstyle');
  expect((await c.list()).map((e) => e.name).sort()).toEqual(['one', 'two']);
  // nbd-server 3.24 answers NBD_OPT_INFO without opening the export: size 0 and generic
  // flags (HAS_FLAGS|SEND_WRITE_ZEROES|CAN_MULTI_CONN, no READ_ONLY). We report what it sends.
  const one = await c.info('one');
  expect(one.name).toBe('one');
  expect([0, 4 * MiB]).toContain(one.size);
  expect(one.flags & 1).toBe(1);
  await expect(c.info('three')).rejects.toBeInstanceOf(NbdOptionError);
  // GO opens it: the real size and flags.
  const conn = await c.go('two');
  expect(conn.info).toMatchObject({ name: 'two', size: 2 * MiB, is: { readOnly: true }, can: { write: false } });
  await conn.disconnect();
});

test('read and write on a writable export; read-only export refuses writes locally', async () => {
  const c = await Client.connect(unixUri(peer.socket, 'one'));
  const conn = await c.go();
  const data = new Uint8Array(MiB + 512).map((_, i) => (i * 13) & 0xff);
  await conn.write(data, 4096);
  if (conn.info.can.flush) await conn.flush();
  expect(Buffer.from(await conn.read(4096, data.length)).equals(Buffer.from(data))).toBe(true);
  await conn.disconnect();

  const ro = await (await Client.connect(unixUri(peer.socket, 'two'))).go();
  expect((await ro.read(MiB, 16)).every((b) => b === 0x77)).toBe(true);
  await expect(ro.write(new Uint8Array(1), 0)).rejects.toMatchObject({
    code: 'NBD_ERR_INVALID_ARGUMENT',
    message: expect.stringMatching(/read-only/),
  });
  await ro.disconnect();
});
