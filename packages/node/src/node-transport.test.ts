import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import type { ByteSink } from '@nbd/protocol';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../../../test/support/peers.js';
import { NodeTransport } from './node-transport.js';

/** A sink that collects what arrives in buffers of `size` bytes. */
function collector(size = 64 * 1024) {
  const got: number[] = [];
  const state = { ended: false as boolean | Error, buffers: 0 };
  let buf = new Uint8Array(size);
  const sink: ByteSink = {
    buffer: () => {
      state.buffers++;
      buf = new Uint8Array(size);
      return buf;
    },
    filled: (n) => {
      for (const b of buf.subarray(0, n)) got.push(b);
      return true;
    },
    ended: (e) => {
      state.ended = e ?? true;
    },
  };
  return { sink, got, state };
}

const servers: Server[] = [];
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const c of cleanups.splice(0)) c();
});

async function pair(kind: 'unix' | 'tcp'): Promise<[Socket, Socket]> {
  const server = createServer();
  servers.push(server);
  let where: { path: string } | { port: number; host: string };
  if (kind === 'unix') {
    const t = tempDir();
    cleanups.push(t.cleanup);
    where = { path: `${t.dir}/s` };
  } else where = { port: 0, host: '127.0.0.1' };
  server.listen(where);
  await once(server, 'listening');
  const addr = server.address();
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(typeof addr === 'string' ? { path: addr } : { port: addr!.port, host: '127.0.0.1' });
  const [s] = await accepted;
  await once(client, 'connect').catch(() => {});
  return [s, client];
}

describe('NodeTransport', () => {
  test.each(['unix', 'tcp'] as const)('a plain %s socket reads straight into the sink (the fast path is taken)', async (kind) => {
    const [server, client] = await pair(kind);
    const t = new NodeTransport(server);
    const { sink, got, state } = collector();
    t.read(sink);
    expect(t.mode).toBe('copy'); // until the handshake is over: STARTTLS may still wrap it
    expect(t.readDirect()).toBe(true);
    expect(t.mode).toBe('direct');
    t.resume();
    client.write(Uint8Array.of(1, 2, 3));
    client.end();
    while (state.ended === false) await new Promise((r) => setTimeout(r, 5));
    expect(got).toEqual([1, 2, 3]);
    expect(state.ended).toBe(true);
    t.destroy();
  });

  test('any other stream has its chunks copied into the sink, split to its buffers', async () => {
    const stream = new PassThrough();
    const t = new NodeTransport(stream);
    const { sink, got, state } = collector(2);
    t.read(sink);
    expect(t.readDirect()).toBe(false);
    expect(t.mode).toBe('copy');
    t.resume();
    stream.write(Uint8Array.of(1, 2, 3, 4, 5));
    stream.end();
    while (state.ended === false) await new Promise((r) => setTimeout(r, 5));
    expect(got).toEqual([1, 2, 3, 4, 5]);
    expect(state.buffers).toBeGreaterThanOrEqual(3);
  });

  test('bytes buffered before the transport took over come first', async () => {
    const [server, client] = await pair('unix');
    server.pause();
    client.write(Uint8Array.of(9, 8));
    await new Promise((r) => setTimeout(r, 20));
    server.read(0); // let the stream buffer what arrived
    const t = new NodeTransport(server);
    const { sink, got } = collector();
    t.read(sink);
    t.resume();
    client.write(Uint8Array.of(7));
    while (got.length < 3) await new Promise((r) => setTimeout(r, 5));
    expect(got).toEqual([9, 8, 7]);
    client.destroy();
    t.destroy();
  });

  test('pause keeps bytes in the kernel; writes and close are reported', async () => {
    const [server, client] = await pair('unix');
    const t = new NodeTransport(server);
    const { sink, got } = collector();
    t.read(sink);
    client.write(Uint8Array.of(1));
    await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual([]); // paused until resume()
    t.resume();
    while (got.length < 1) await new Promise((r) => setTimeout(r, 5));
    const written = new Promise<Error | undefined>((r) => t.write(Uint8Array.of(5), r));
    expect(await written).toBeUndefined();
    const [echo] = (await once(client, 'data')) as [Buffer];
    expect([...echo]).toEqual([5]);
    const closed = new Promise<Error | undefined>((r) => (t.onClose = r));
    client.destroy();
    expect(await closed).toBeUndefined();
    expect(t.closed).toBe(true);
    expect(await new Promise((r) => t.write(Uint8Array.of(1), r))).toBeInstanceOf(Error);
  });
});
