// Our server with TLS (STARTTLS), from their clients: nbdinfo, nbdcopy, qemu-img and
// qemu-io, python3-libnbd and nbd-client, with PSK and X.509; the three modes of the
// spec (NOTLS, FORCEDTLS, SELECTIVETLS); and the refusals, each clear and leak-free.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { parsePskFile } from '@nbd/node';
import { encodeClientFlags, encodeOptionRequest, Option, OptionReply, ServerStreamDecoder } from '@nbd/protocol';
import { type ConnectionInfo, type Export, listenAndServe, MemoryDevice, type ServeOptions } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as dist from '../../packages/server/dist/index.js';
import { run, runOk, runPython, tempDir } from '../support/peers.js';
import { EACH_QEMU, qemuTool } from '../support/qemu.js';
import { type Credentials, makeCredentials } from '../support/tls.js';
import { MiB, type OurServer, RawClient, startOurServer } from './server-support.js';

const SIZE = 8 * MiB;
const exports = (): Export[] => [
  { name: 'disk', size: SIZE, device: new MemoryDevice(SIZE) },
  { name: 'secret', size: SIZE, device: new MemoryDevice(SIZE), tlsOnly: true },
];
const tmp = tempDir('nbd-tls-');
let creds: Credentials;
const servers: OurServer[] = [];
async function server(opts: ServeOptions, exps = exports()): Promise<OurServer> {
  const s = await startOurServer(exps, opts);
  servers.push(s);
  return s;
}
const psk = () => join(creds.dir, 'keys.psk');
/** nbds+unix URI with PSK credentials. */
const pskUri = (s: OurServer, name = 'disk', file = psk(), user = 'alice') =>
  `nbds+unix://${user}@/${name}?socket=${s.socket}&tls-psk-file=${file}`;
/** nbds+unix URI with X.509 credentials (libnbd 1.14 checks no host name on a unix socket). */
const x509Uri = (s: OurServer, name = 'disk', dir = creds.dir) => `nbds+unix:///${name}?socket=${s.socket}&tls-certificates=${dir}`;

/** Our server on loopback TCP, where clients check the certificate's chain and host name. */
async function tcpServer(opts: ServeOptions): Promise<{ uri: (dir: string) => string; stop: () => Promise<void> }> {
  const ac = new AbortController();
  const up = Promise.withResolvers<number>();
  const done = listenAndServe({ host: '127.0.0.1', port: 0 }, exports(), {
    ...opts,
    signal: ac.signal,
    onListen: (a) => up.resolve((a as AddressInfo).port),
  });
  const port = await Promise.race([up.promise, done.then(() => 0)]);
  const stop = async () => {
    ac.abort();
    await done;
  };
  return { uri: (dir) => `nbds://localhost:${port}/disk?tls-certificates=${dir}`, stop };
}

/** A raw client that negotiates STARTTLS with PSK by hand, then talks options over TLS. */
async function rawTls(
  socketPath: string,
  pskFile: string,
): Promise<{ option: (req: Parameters<typeof encodeOptionRequest>[0]) => Promise<number>; close: () => void }> {
  const plain = connect(socketPath);
  await new Promise((r) => plain.once('connect', r));
  const greeting = new ServerStreamDecoder();
  await new Promise<void>((resolve) => {
    plain.on('data', function onData(d: Buffer) {
      greeting.push(d);
      if (greeting.next()) {
        plain.off('data', onData);
        resolve();
      }
    });
  });
  plain.write(Buffer.concat([encodeClientFlags(3), encodeOptionRequest({ kind: 'starttls' })]));
  await new Promise((r) => plain.once('data', r)); // the ACK (20 bytes)
  const [user, key] = [...parsePskFile(readFileSync(pskFile, 'utf8'))][0]!;
  const t = tls.connect({
    socket: plain,
    pskCallback: () => ({ psk: key, identity: user }),
    ciphers: `${tls.DEFAULT_CIPHERS}:PSK-AES128-GCM-SHA256`,
    checkServerIdentity: () => undefined,
  });
  await new Promise((r, j) => (t.once('secureConnect', r), t.once('error', j)));
  const d = new ServerStreamDecoder();
  d.startOptions();
  const option = async (req: Parameters<typeof encodeOptionRequest>[0]) => {
    t.write(encodeOptionRequest(req));
    for (;;) {
      const f = d.next();
      if (f?.kind === 'option-reply') return f.type;
      const [chunk] = (await new Promise((r) => t.once('data', (c) => r([c])))) as [Buffer];
      d.push(chunk);
    }
  };
  return { option, close: () => t.destroy() };
}

beforeAll(async () => {
  creds = await makeCredentials(tmp.dir);
}, 60_000);
afterAll(async () => {
  for (const s of servers) await s.stop();
  tmp.cleanup();
});

describe('TLS with PSK (FORCEDTLS)', () => {
  let srv: OurServer;
  const seen: ConnectionInfo[] = [];
  beforeAll(async () => {
    srv = await server({
      tls: { pskFile: psk() },
      preconnect: (info) => {
        seen.push(info);
        return true;
      },
    });
  });

  it('nbdinfo over nbds+unix:// with a PSK file; preconnect sees the PSK user once TLS is up', async () => {
    const out = await runOk('nbdinfo', ['--json', pskUri(srv)]);
    const info = JSON.parse(out) as { protocol: string; TLS: boolean; exports: { 'export-size': number }[] };
    expect(info.TLS).toBe(true);
    expect(info.exports[0]!['export-size']).toBe(SIZE);
    expect(seen.some((i) => i.tls?.psk === 'alice')).toBe(true);
  });

  it('nbdcopy both ways over TLS', async () => {
    const src = join(tmp.dir, 'src.img');
    const back = join(tmp.dir, 'back.img');
    const data = randomFillSync(Buffer.alloc(SIZE));
    writeFileSync(src, data);
    await runOk('nbdcopy', [src, pskUri(srv)]);
    await runOk('nbdcopy', [pskUri(srv), back]);
    expect(readFileSync(back).equals(data)).toBe(true);
  });

  it('on worker threads (threads: 2, each loading the PSK file): nbdcopy both ways over 4 TLS connections', async () => {
    // Worker threads run the built server (dist/), as in server-threads.test.ts.
    const shared = await startOurServer(
      [{ name: 'disk', size: SIZE, device: new dist.SharedMemoryDevice(SIZE) }],
      { tls: { pskFile: psk() }, threads: 2 },
      dist.listenAndServe,
    );
    servers.push(shared);
    const src = join(tmp.dir, 'src-threads.img');
    const back = join(tmp.dir, 'back-threads.img');
    const data = randomFillSync(Buffer.alloc(SIZE));
    writeFileSync(src, data);
    await runOk('nbdcopy', ['--connections=4', src, pskUri(shared)]);
    await runOk('nbdcopy', ['--connections=4', pskUri(shared), back]);
    expect(readFileSync(back).equals(data)).toBe(true);
    const plain = await run('nbdinfo', [`nbd+unix:///disk?socket=${shared.socket}`]);
    expect(plain.code).not.toBe(0); // FORCEDTLS on the workers too
  });

  it.each(EACH_QEMU)('qemu-io and qemu-img %s with --object tls-creds-psk', async (_version, q) => {
    const object = `tls-creds-psk,id=tls0,endpoint=client,dir=${creds.dir},username=alice`;
    const image = `driver=nbd,server.type=unix,server.path=${srv.socket},export=disk,tls-creds=tls0`;
    await runOk(qemuTool(q, 'qemu-io'), [
      '--object',
      object,
      '--image-opts',
      image,
      '-c',
      'write -P 0x77 0 64k',
      '-c',
      'read -P 0x77 0 64k',
    ]);
    const info = JSON.parse(await runOk(qemuTool(q, 'qemu-img'), ['info', '--output=json', '--object', object, '--image-opts', image])) as {
      'virtual-size': number;
    };
    expect(info['virtual-size']).toBe(SIZE);
  });

  it('python3-libnbd with set_tls(TLS_REQUIRE) and a PSK file', async () => {
    const r = await runPython(
      `
import nbd, sys
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(sys.argv[2])
h.set_tls_username('alice')
h.set_export_name('disk')
h.connect_unix(sys.argv[1])
assert h.get_tls_negotiated()
h.pwrite(b'\\x42' * 4096, 4096)
assert h.pread(4096, 4096) == b'\\x42' * 4096
print(h.get_size())
h.shutdown()
`,
      [srv.socket, psk()],
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(String(SIZE));
  });

  it('refused: a wrong key, an unknown user — clearly, and the server serves on', async () => {
    const wrong = await run('nbdinfo', [pskUri(srv, 'disk', join(creds.wrongKey, 'keys.psk'))]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/TLS|handshake|decrypt|psk/i);
    const bob = join(tmp.dir, 'bob.psk');
    await runOk('psktool', ['-u', 'bob', '-p', bob]);
    const unknown = await run('nbdinfo', [pskUri(srv, 'disk', bob, 'bob')]);
    expect(unknown.code).not.toBe(0);
    await runOk('nbdinfo', ['--size', pskUri(srv)]);
  });

  it('a plaintext client gets ERR_TLS_REQD for every option, and EXPORT_NAME closes', async () => {
    const c = await RawClient.connect(srv.socket);
    expect((await c.frame())?.kind).toBe('greeting');
    c.write(encodeClientFlags(3));
    const reqs: Parameters<typeof encodeOptionRequest>[0][] = [
      { kind: 'list' },
      { kind: 'go', name: 'disk', requests: [] },
      { kind: 'structured-reply' },
    ];
    for (const req of reqs) {
      c.write(encodeOptionRequest(req));
      expect(await c.frame()).toMatchObject({ kind: 'option-reply', type: OptionReply.ERR_TLS_REQD });
    }
    c.write(encodeOptionRequest({ kind: 'export-name', name: 'disk' }));
    expect(await c.waitClosed()).toBe(true);
  });

  it('bytes sent after STARTTLS, before the TLS handshake, are dropped and never interpreted', async () => {
    const c = await RawClient.connect(srv.socket);
    await c.frame();
    // STARTTLS and, in the same write, a plaintext LIST that must not be answered.
    c.write(Buffer.concat([encodeClientFlags(3), encodeOptionRequest({ kind: 'starttls' }), encodeOptionRequest({ kind: 'list' })]));
    expect(await c.frame()).toMatchObject({ kind: 'option-reply', option: Option.STARTTLS, type: OptionReply.ACK });
    // What follows is the server waiting for a ClientHello: no option reply to the LIST ever comes.
    expect(await c.frame(500).catch(() => null)).toBeNull();
    c.close();
  });
});

describe('TLS with X.509', () => {
  let srv: OurServer;
  let verify: OurServer;
  beforeAll(async () => {
    srv = await server({ tls: { certificates: creds.dir } });
    verify = await server({
      tls: { certificates: creds.dir, verifyPeer: true },
      preconnect: (i) => i.tls === undefined || (i.tls.subject?.includes('CN=test-client') ?? false),
    });
  });

  it('nbdinfo with tls-certificates, over a unix socket and over TCP (chain and host name checked)', async () => {
    expect((await runOk('nbdinfo', ['--size', x509Uri(srv)])).trim()).toBe(String(SIZE));
    const tcp = await tcpServer({ tls: { certificates: creds.dir } });
    try {
      expect((await runOk('nbdinfo', ['--size', tcp.uri(creds.dir)])).trim()).toBe(String(SIZE));
    } finally {
      await tcp.stop();
    }
  });

  it.each(EACH_QEMU)('qemu-img and qemu-io %s with --object tls-creds-x509', async (_version, q) => {
    const object = `tls-creds-x509,id=tls0,endpoint=client,dir=${creds.dir}`;
    const image = `driver=nbd,server.type=unix,server.path=${srv.socket},export=disk,tls-creds=tls0,tls-hostname=localhost`;
    const info = JSON.parse(await runOk(qemuTool(q, 'qemu-img'), ['info', '--output=json', '--object', object, '--image-opts', image])) as {
      'virtual-size': number;
    };
    expect(info['virtual-size']).toBe(SIZE);
    await runOk(qemuTool(q, 'qemu-io'), [
      '--object',
      object,
      '--image-opts',
      image,
      '-c',
      'write -P 0x31 64k 64k',
      '-c',
      'read -P 0x31 64k 64k',
    ]);
  });

  it('nbd-client -l lists over TLS with its certificate options', async () => {
    const out = await runOk('nbd-client', [
      '-l',
      '-unix',
      srv.socket,
      '-cacertfile',
      join(creds.dir, 'ca-cert.pem'),
      '-certfile',
      join(creds.dir, 'client-cert.pem'),
      '-keyfile',
      join(creds.dir, 'client-key.pem'),
      '-tlshostname',
      'localhost',
    ]);
    expect(out).toMatch(/disk/);
  });

  it('verifyPeer: a client certificate from the CA is accepted and its subject reaches preconnect', async () => {
    expect((await runOk('nbdinfo', ['--size', x509Uri(verify)])).trim()).toBe(String(SIZE));
  });

  it('refused: a missing client certificate under verifyPeer', async () => {
    const noCert = join(tmp.dir, 'ca-only');
    await runOk('mkdir', ['-p', noCert]);
    await runOk('cp', [join(creds.dir, 'ca-cert.pem'), noCert]);
    const r = await run('nbdinfo', ['--size', x509Uri(verify, 'disk', noCert)]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/TLS|alert/i);
    await runOk('nbdinfo', ['--size', x509Uri(verify)]); // and it still serves
  });

  it('refused over TCP: an untrusted CA, a host name the certificate does not name, an expired certificate', async () => {
    const good = await tcpServer({ tls: { certificates: creds.dir } });
    const wrongHost = await tcpServer({ tls: { certificates: creds.wrongHost } });
    const expired = await tcpServer({ tls: { certificates: creds.expired } });
    try {
      const untrusted = await run('nbdinfo', ['--size', good.uri(creds.otherCa)]); // the client trusts another CA
      expect(untrusted.code).not.toBe(0);
      expect(untrusted.stderr).toMatch(/certificate|verif/i);
      const host = await run('nbdinfo', ['--size', wrongHost.uri(creds.dir)]);
      expect(host.code).not.toBe(0);
      expect(host.stderr).toMatch(/host|name|certificate|verif/i);
      const old = await run('nbdinfo', ['--size', expired.uri(creds.dir)]);
      expect(old.code).not.toBe(0);
      expect(old.stderr).toMatch(/expired|certificate|verif/i);
      expect((await runOk('nbdinfo', ['--size', good.uri(creds.dir)])).trim()).toBe(String(SIZE)); // still serves
    } finally {
      await Promise.all([good.stop(), wrongHost.stop(), expired.stop()]);
    }
  });
});

describe('TLS modes', () => {
  it('SELECTIVETLS: plaintext LIST leaves out TLS-only exports, INFO/GO for them is ERR_TLS_REQD; over TLS they are there', async () => {
    const srv = await server({ tls: { pskFile: psk(), mode: 'on' } });
    const plain = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${srv.socket}`]);
    expect((JSON.parse(plain) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name'])).toEqual(['disk']);
    const refused = await run('nbdinfo', ['--size', `nbd+unix:///secret?socket=${srv.socket}`]);
    expect(refused.code).not.toBe(0);
    const secure = await runOk('nbdinfo', ['--list', '--json', pskUri(srv, '')]);
    expect((JSON.parse(secure) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name'])).toEqual([
      'disk',
      'secret',
    ]);
    expect((await runOk('nbdinfo', ['--size', pskUri(srv, 'secret')])).trim()).toBe(String(SIZE));
  });

  it('NOTLS: STARTTLS is answered ERR_POLICY; a second STARTTLS over TLS is ERR_INVALID; state is forgotten after STARTTLS', async () => {
    const plain = await server({}, exports().slice(0, 1)); // NOTLS: a tlsOnly export is refused at start
    const c = await RawClient.connect(plain.socket);
    await c.frame();
    c.write(Buffer.concat([encodeClientFlags(3), encodeOptionRequest({ kind: 'starttls' })]));
    expect(await c.frame()).toMatchObject({ kind: 'option-reply', type: OptionReply.ERR_POLICY });
    c.close();
    const t = await rawTls((await server({ tls: { pskFile: psk() } })).socket, psk());
    try {
      expect(await t.option({ kind: 'starttls' })).toBe(OptionReply.ERR_INVALID);
      // Over TLS, structured replies can be negotiated afresh, once.
      expect(await t.option({ kind: 'structured-reply' })).toBe(OptionReply.ACK);
      expect(await t.option({ kind: 'structured-reply' })).toBe(OptionReply.ERR_INVALID);
    } finally {
      t.close();
    }
  });

  it('the handshake limit covers the TLS handshake: a client that never says ClientHello is closed', async () => {
    const srv = await server({ tls: { pskFile: psk() }, handshakeTimeout: 300 });
    const c = await RawClient.connect(srv.socket);
    await c.frame();
    c.write(Buffer.concat([encodeClientFlags(3), encodeOptionRequest({ kind: 'starttls' })]));
    expect(await c.frame()).toMatchObject({ type: OptionReply.ACK });
    expect(await c.waitClosed(3000)).toBe(true);
  });
});
