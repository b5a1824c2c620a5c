// Our client with TLS, to their servers: nbdkit --tls=require (X.509 with and without
// --tls-verify-peer, PSK), qemu-nbd --tls-creds (X.509, PSK; qemu 7.2 and 10.0),
// nbd-server with force_tls, and our own server; list/info/go, multi-connection and
// copy(); 'allow' falling back; and the refusals, each clear.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, type ClientTlsOptions, connectMulti } from '@nbd/client';
import { copy } from '@nbd/copy';
import { AllocationState, ErrorCode } from '@nbd/protocol';
import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Peer, run, runOk, startNbdkit, startNbdServer, tempDir } from '../support/peers.js';
import { EACH_QEMU, startQemuNbdOf } from '../support/qemu.js';
import { type Credentials, makeCredentials } from '../support/tls.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SIZE = 16 * MiB;
const tmp = tempDir('nbd-client-tls-');
let creds: Credentials;
const peers: (Peer | OurServer)[] = [];
async function peer<T extends Peer | OurServer>(p: Promise<T>): Promise<T> {
  const started = await p;
  peers.push(started);
  return started;
}
const psk = () => join(creds.dir, 'keys.psk');
const x509 = (dir = creds.dir) => ({ mode: 'require' as const, certificates: dir, hostname: 'localhost' });

beforeAll(async () => {
  creds = await makeCredentials(tmp.dir);
}, 60_000);
afterAll(async () => {
  for (const p of peers) await p.stop();
  tmp.cleanup();
});

/** A connection through every call a client makes: list, info, go, I/O, block status. */
async function roundTrip(uri: string, tls: ClientTlsOptions | undefined, name = ''): Promise<void> {
  const client = await Client.connect(uri, { tls });
  expect(client.tls?.protocol).toMatch(/TLSv1\.[23]/);
  expect(await client.info(name)).toMatchObject({ size: SIZE });
  const conn = await client.go(name, { metaContexts: ['base:allocation'] });
  expect(conn.tls).toEqual(client.tls);
  const data = randomFillSync(new Uint8Array(256 * 1024));
  await conn.write(data, MiB);
  expect(Buffer.from(await conn.read(MiB, data.length)).equals(Buffer.from(data))).toBe(true);
  const map = await conn.blockStatus(0, 4 * MiB);
  expect(map.get('base:allocation')!.length).toBeGreaterThan(0);
  await conn.disconnect();
}

describe('to nbdkit --tls=require', () => {
  test('X.509: list, info, go, I/O, block status', async () => {
    const s = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-certificates=${creds.dir}`]));
    const client = await Client.connect(s.uri, { tls: x509() });
    expect((await client.list()).map((e) => e.name)).toEqual(['']);
    await client.abort();
    await roundTrip(s.uri, x509());
  });

  test('X.509 with --tls-verify-peer: our client certificate is checked', async () => {
    const s = await peer(
      startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-certificates=${creds.dir}`, '--tls-verify-peer']),
    );
    await roundTrip(s.uri, x509());
    // Without a client certificate: refused (TLS 1.3 shows it at the first read, not at the handshake).
    const caOnly = join(tmp.dir, 'ca-only');
    await runOk('mkdir', ['-p', caOnly]);
    await runOk('cp', [join(creds.dir, 'ca-cert.pem'), caOnly]);
    const err = await Client.connect(s.uri, { tls: x509(caOnly) })
      .then((c) => c.info())
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
  });

  test('PSK, from an nbds+unix:// URI with the user in it; multi-connection and copy()', async () => {
    const s = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-psk=${psk()}`]));
    const uri = `nbds+unix://alice@/?socket=${s.socket}&tls-psk-file=${psk()}`;
    await roundTrip(uri, undefined);
    const multi = await connectMulti(uri, { connections: 2 });
    expect(multi.connections).toHaveLength(2);
    expect(multi.connections.every((c) => c.tls?.psk === 'alice')).toBe(true);
    await multi.disconnect();
    const src = join(tmp.dir, 'copy-src.img');
    const back = join(tmp.dir, 'copy-back.img');
    writeFileSync(src, randomFillSync(Buffer.alloc(SIZE)));
    await copy(src, uri);
    await copy(uri, back);
    expect(readFileSync(back).equals(readFileSync(src))).toBe(true);
  });

  test('refused: a wrong PSK key, an unknown user, an untrusted CA, a wrong host name, an expired certificate', async () => {
    const p = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-psk=${psk()}`]));
    const wrongKey = await Client.connect(p.uri, { tls: { pskFile: join(creds.wrongKey, 'keys.psk'), username: 'alice' } }).catch(
      (e: unknown) => e,
    );
    expect(wrongKey).toMatchObject({ code: ErrorCode.PROTOCOL, message: expect.stringMatching(/TLS/) });
    const unknown = await Client.connect(p.uri, { tls: { psk: { bob: 'cd'.repeat(32) }, username: 'bob' } }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(Error);
    const x = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-certificates=${creds.dir}`]));
    const untrusted = await Client.connect(x.uri, { tls: x509(creds.otherCa) }).catch((e: unknown) => e);
    expect((untrusted as Error).message).toMatch(/certificate|TLS/i);
    const host = await Client.connect(x.uri, { tls: { ...x509(), hostname: 'not-this-host.example' } }).catch((e: unknown) => e);
    expect((host as Error).message).toMatch(/host|altnames|certificate/i);
    const old = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=require', `--tls-certificates=${creds.expired}`]));
    const expired = await Client.connect(old.uri, { tls: x509() }).catch((e: unknown) => e);
    expect((expired as Error).message).toMatch(/expired|certificate/i);
  });

  test("'allow' uses TLS where offered and falls back to plaintext where it is not; 'require' never does", async () => {
    const tls = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=on', `--tls-psk=${psk()}`]));
    const on = await Client.connect(tls.uri, { tls: { mode: 'allow', pskFile: psk(), username: 'alice' } });
    expect(on.tls?.psk).toBe('alice');
    await on.abort();
    const plain = await peer(startNbdkit(['memory', `size=${SIZE}`], ['--tls=off']));
    const off = await Client.connect(plain.uri, { tls: { mode: 'allow', pskFile: psk(), username: 'alice' } });
    expect(off.tls).toBeUndefined();
    expect((await off.info()).size).toBe(SIZE);
    await off.abort();
    const required = await Client.connect(plain.uri, { tls: { pskFile: psk(), username: 'alice' } }).catch((e: unknown) => e);
    expect(required).toMatchObject({
      code: ErrorCode.UNSUPPORTED,
      message: expect.stringMatching(/TLS is required, but the server answered STARTTLS with ERR_POLICY/),
    });
  });
});

describe.each(EACH_QEMU)('to qemu-nbd %s --tls-creds', (_version, q) => {
  test('X.509 and PSK', async () => {
    const image = join(tmp.dir, `qemu-${q.version}.img`);
    writeFileSync(image, Buffer.alloc(SIZE));
    const x = await peer(
      startQemuNbdOf(q, image, ['-f', 'raw', '--object', `tls-creds-x509,id=tls0,endpoint=server,dir=${creds.dir}`, '--tls-creds', 'tls0']),
    );
    await roundTrip(x.uri, x509());
    const p = await peer(
      startQemuNbdOf(q, image, ['-f', 'raw', '--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${creds.dir}`, '--tls-creds', 'tls0']),
    );
    await roundTrip(p.uri, { pskFile: psk(), username: 'alice' });
  });
});

test('to nbd-server with force_tls (X.509)', async () => {
  const image = join(tmp.dir, 'nbd-server.img');
  writeFileSync(image, Buffer.alloc(SIZE));
  const generic = [
    `    certfile = ${join(creds.dir, 'server-cert.pem')}`,
    `    keyfile = ${join(creds.dir, 'server-key.pem')}`,
    `    cacertfile = ${join(creds.dir, 'ca-cert.pem')}`,
    '    force_tls = true',
    '',
  ].join('\n');
  const s = await peer(startNbdServer({ disk: { file: image } }, generic));
  const client = await Client.connect(s.uri.replace(/\/[^/?]*\?/, '/disk?'), { tls: x509() });
  expect(client.tls).toBeDefined();
  const conn = await client.go('disk');
  await conn.write(new Uint8Array(4096).fill(7), 0);
  expect((await conn.read(0, 4096)).every((b) => b === 7)).toBe(true);
  await conn.disconnect();
});

describe('to our own server', () => {
  test('PSK and X.509, with extended headers; a plaintext-only server makes a require client fail', async () => {
    const exports = [{ name: 'd', size: SIZE, device: new MemoryDevice(SIZE) }];
    const p = await peer(startOurServer(exports, { tls: { pskFile: psk() } }));
    const client = await Client.connect(p.uri('d'), { tls: { pskFile: psk(), username: 'alice' } });
    const conn = await client.go('d', { extendedHeaders: true, metaContexts: ['base:allocation'] });
    expect(conn.extendedHeaders).toBe(true);
    expect(conn.readMode).toBe('copy'); // TLS decrypts in between
    await conn.write(new Uint8Array(MiB).fill(3), 0);
    const st = await conn.blockStatus(0, 2 * MiB);
    expect(st.get('base:allocation')![0]).toMatchObject({ flags: 0 });
    expect(st.get('base:allocation')!.some((e) => (e.flags & AllocationState.HOLE) !== 0)).toBe(true);
    await conn.disconnect();
    const x = await peer(
      startOurServer([{ name: 'd', size: SIZE, device: new MemoryDevice(SIZE) }], { tls: { certificates: creds.dir, verifyPeer: true } }),
    );
    await roundTrip(x.uri('d'), x509(), 'd');
    const plain = await peer(startOurServer([{ name: 'd', size: SIZE, device: new MemoryDevice(SIZE) }]));
    const refused = await Client.connect(plain.uri('d'), { tls: x509() }).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/TLS is required/);
    const r = await run('nbdinfo', ['--size', plain.uri('d')]);
    expect(r.code).toBe(0); // and it still serves
  });
});
