// A refused TLS handshake says which side refused and the likely cause, on both
// sides, instead of OpenSSL's raw text (`…:error:0A00041B:SSL routines:…`).
import { writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../../../test/support/peers.js';
import { type ClientTlsOptions, clientTls, type ServerTlsOptions, serverTls } from './tls.js';

const ALICE = '0123456789abcdef0123456789abcdef';
const servers: Server[] = [];
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const c of cleanups.splice(0)) c();
});

function pskFile(name: string, line: string): string {
  const t = tempDir('nbd-tls-test-');
  cleanups.push(t.cleanup);
  const path = join(t.dir, name);
  writeFileSync(path, `${line}\n`);
  return path;
}

/** A connected plain socket pair over loopback TCP: [client side, server side]. */
async function pair(): Promise<[Socket, Socket]> {
  const server = createServer();
  servers.push(server);
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  return [client, await accepted];
}

/** Both sides' handshake errors (messages), with our server's and our client's settings. */
async function handshake(server: ServerTlsOptions, client: ClientTlsOptions): Promise<{ server: string; client: string }> {
  const [c, s] = await pair();
  const side = await serverTls(server);
  const [sr, cr] = await Promise.allSettled([side.accept(s, 5000), clientTls(c, client, 'localhost', 5000)]);
  const message = (r: PromiseSettledResult<unknown>) => (r.status === 'rejected' ? (r.reason as Error).message : 'accepted');
  return { server: message(sr), client: message(cr) };
}

const RAW_OPENSSL = /SSL routines|:error:[0-9A-F]+:/;

describe('a refused PSK handshake, between our client and our server', () => {
  test('a wrong key: the server refused, and it says the key is wrong (both sides)', async () => {
    const good = pskFile('good.psk', `alice:${ALICE}`);
    const bad = pskFile('bad.psk', `alice:${'ff'.repeat(16)}`);
    const r = await handshake({ pskFile: good }, { pskFile: bad, username: 'alice' });
    expect(r.client).toBe(`the server refused TLS: its key for PSK user "alice" is not the one in ${bad} (a wrong key)`);
    expect(r.server).toBe('refused TLS: the client\'s key for PSK user "alice" is not ours (a wrong key on the client)');
  });

  test('an unknown username: the server refused, and it names the user', async () => {
    const good = pskFile('good.psk', `alice:${ALICE}`);
    const r = await handshake({ pskFile: good }, { psk: { bob: ALICE }, username: 'bob' });
    expect(r.client).toBe('the server refused TLS (alert "handshake failure"): it has no key for PSK user "bob" (a wrong username?)');
    expect(r.server).toBe('refused TLS: PSK user "bob" is not in our keys (a wrong username on the client?)');
  });

  test('a client without PSK keys at a PSK-only server', async () => {
    const good = pskFile('good.psk', `alice:${ALICE}`);
    const r = await handshake({ pskFile: good }, { verifyPeer: false });
    expect(r.client).toMatch(/^the server refused TLS \(alert "handshake failure"\): it may take PSK keys only \(tls-psk-file=\)/);
    expect(r.server).toMatch(/^refused TLS: the client offered no PSK username \(this server takes PSK keys only; /);
    expect(`${r.client}\n${r.server}`).not.toMatch(RAW_OPENSSL);
  });
});

test('a server that hangs up mid-handshake (GnuTLS servers do on a wrong PSK key or user): the likely cause, from the client', async () => {
  const [c, s] = await pair();
  s.once('data', () => s.destroy());
  const file = pskFile('keys.psk', `alice:${ALICE}`);
  const err = await clientTls(c, { pskFile: file, username: 'alice' }, 'localhost', 5000).catch((e: unknown) => e as Error);
  expect((err as Error).message).toBe(
    `the server closed the connection during the TLS handshake: a wrong PSK key or username? (PSK user "alice", key from ${file})`,
  );
});
