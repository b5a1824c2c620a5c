// A peer that goes away in the middle: a client closing mid-request (a WRITE payload cut
// short) and mid-reply (a 16 MiB READ reply being sent), against our server in its own
// process; a server closing mid-request and mid-reply, against our client. Each side
// lives on: no hang, no leaked connection, others served.
import { connect } from 'node:net';
import { open } from '@nbd/client';
import { ClientFlag, Command, encodeChunk, encodeClientFlags, encodeOptionRequest, encodeRequest, NbdClosedError } from '@nbd/protocol';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { scopedFakeServers } from '../../packages/client/test/fake-server.js';
import { bystanderServed, MiB, ServerChild } from '../hostile/support.js';

let srv: ServerChild;
beforeAll(async () => {
  srv = await ServerChild.start({}, 64);
});
afterAll(async () => {
  await srv?.stop();
});
const serve = scopedFakeServers();

/** A raw connection in transmission (structured replies) on export "mem". */
async function rawTransmission() {
  const s = connect(srv.socket);
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  s.write(
    Buffer.concat([
      encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
      encodeOptionRequest({ kind: 'structured-reply' }),
      encodeOptionRequest({ kind: 'go', name: 'mem', requests: [] }),
    ]),
  );
  return s;
}

describe('our server when the client goes away', () => {
  test('mid-request: a WRITE header and 1 MiB of its 16 MiB payload, then the socket closes', async () => {
    for (let i = 0; i < 20; i++) {
      const s = await rawTransmission();
      s.write(encodeRequest({ type: Command.WRITE, flags: 0, cookie: 1n, offset: 0n, length: BigInt(16 * MiB) }));
      s.write(new Uint8Array(MiB));
      await new Promise((r) => setTimeout(r, 10));
      s.destroy();
    }
    await expect.poll(() => srv.connections(), { timeout: 10_000 }).toBe(0);
    expect(srv.alive).toBe(true);
    await bystanderServed(srv.socket, 1);
  });

  test('mid-reply: a 16 MiB READ, the socket closed after the first 64 KiB of the reply arrived', async () => {
    const before = await srv.rss();
    for (let i = 0; i < 20; i++) {
      const s = await rawTransmission();
      s.write(encodeRequest({ type: Command.READ, flags: 0, cookie: 1n, offset: 0n, length: BigInt(16 * MiB) }));
      await new Promise<void>((resolve) => {
        let got = 0;
        s.on('data', (d: Buffer) => {
          got += d.length;
          if (got > 65536) {
            s.destroy();
            resolve();
          }
        });
      });
    }
    await expect.poll(() => srv.connections(), { timeout: 10_000 }).toBe(0);
    const after = await srv.rss();
    console.log(`20 READ replies cut short: server RSS ${before.toFixed(0)} MiB before, ${after.toFixed(0)} MiB after`);
    expect(after - before).toBeLessThan(100);
    await bystanderServed(srv.socket, 2);
  });
});

describe('our client when the server goes away', () => {
  test('mid-request: the server closes after half of a 4 MiB WRITE payload; the write and every call in flight reject, nothing hangs', async () => {
    const fake = await serve(async (p) => {
      await p.negotiate({ size: 64n * BigInt(MiB) });
      await new Promise<void>((resolve) => {
        let got = 0;
        p.socket.on('data', (d: Buffer) => {
          got += d.length;
          if (got > 2 * MiB) resolve();
        });
      });
      p.socket.destroy();
    });
    const conn = await open(fake.uri);
    const write = conn.write(new Uint8Array(4 * MiB), 0).catch((e: unknown) => e);
    const read = conn.read(0, 4096).catch((e: unknown) => e);
    expect(await write).toBeInstanceOf(NbdClosedError);
    expect(await read).toBeInstanceOf(NbdClosedError);
    await expect(conn.flush()).rejects.toBeInstanceOf(NbdClosedError);
  });

  test('mid-reply: the server closes after sending half of a 1 MiB READ chunk', async () => {
    const fake = await serve(async (p) => {
      await p.negotiate();
      const r = await p.request();
      const chunk = encodeChunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(Number(r.length)).fill(1) });
      p.send(chunk.subarray(0, chunk.length >> 1));
      await new Promise((res) => setTimeout(res, 50));
      p.socket.destroy();
    });
    const conn = await open(fake.uri);
    await expect(conn.read(0, MiB)).rejects.toBeInstanceOf(NbdClosedError);
    expect(conn.state).toBe('failed');
  });
});
