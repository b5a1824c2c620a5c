import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@nbd/client';
import { socketPair } from '@nbd/node';
import { Command, decodeSimpleReply, encodeRequest } from '@nbd/protocol';
import { listen, MemoryDevice } from '@nbd/server';
import { describe, expect, test } from 'vitest';
import { prepare } from './configure.js';
import { pumpFor } from './pump.js';

const MiB = 1 << 20;

describe('pumpFor (a connection without a descriptor, reaching the kernel through a socketpair)', () => {
  test('copies both ways, and the kernel closing its end closes the connection', async () => {
    const [connection, server] = socketPair(); // `server` stands for the far end of a TLS session
    const { kernelEnd, done } = pumpFor(connection);
    kernelEnd.write(Buffer.from('request'));
    const [got] = (await once(server, 'data')) as [Buffer];
    expect(got.toString()).toBe('request');
    server.write(Buffer.from('reply'));
    const [back] = (await once(kernelEnd, 'data')) as [Buffer];
    expect(back.toString()).toBe('reply');
    kernelEnd.end();
    await once(server, 'end');
    server.end();
    await done;
    expect(connection.destroyed || connection.writableEnded).toBe(true);
  });

  test('the connection dying ends the kernel side too', async () => {
    const [connection, server] = socketPair();
    const { kernelEnd, done } = pumpFor(connection);
    server.destroy();
    kernelEnd.resume();
    await once(kernelEnd, 'end');
    kernelEnd.destroy();
    await done;
  });
});

describe('a TLS connection detached from the client and pumped (what configure() does before the kernel reads)', () => {
  test('the kernel end carries plain NBD: a READ written there gets its reply through the TLS session', async () => {
    const key = '0123456789abcdef0123456789abcdef';
    const data = new Uint8Array(4096).map((_, i) => i % 251);
    const device = new MemoryDevice(MiB);
    device.writeAt(data, 8192);
    const ac = new AbortController();
    const server = await listen({ path: join(mkdtempSync(join(tmpdir(), 'nbd-pump-')), 's.sock') }, [{ name: '', size: MiB, device }], {
      tls: { mode: 'require', psk: { alice: key } },
      signal: ac.signal,
    });
    try {
      const client = await Client.connect(
        { path: server.address as string },
        { tls: { mode: 'require', psk: { alice: key }, username: 'alice' } },
      );
      const conn = await client.go('', { structuredReplies: false });
      const p = prepare(conn);
      const kernel = p.sockets[0] as Socket;
      kernel.write(encodeRequest({ flags: 0, type: Command.READ, cookie: 7n, offset: 8192n, length: 4096n }));
      const reply = await readBytes(kernel, 16 + 4096);
      expect(decodeSimpleReply(reply.subarray(0, 16))).toMatchObject({ error: 0, cookie: 7n });
      expect(Buffer.from(reply.subarray(16)).equals(Buffer.from(data))).toBe(true);
      kernel.destroy();
      for (const s of p.pumped) s.destroy();
    } finally {
      ac.abort();
      await server.closed;
    }
  });
});

async function readBytes(socket: Socket, n: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let have = 0;
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    have += chunk.length;
    if (have >= n) break;
  }
  return Buffer.concat(chunks).subarray(0, n);
}
