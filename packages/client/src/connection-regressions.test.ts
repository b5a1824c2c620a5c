// Regression tests for defects found in review, each against a scripted fake server:
// aborted reads, malformed READ and BLOCK_STATUS replies, detach, disconnect aborts, lent reads.

import { Command, NbdUnsupportedError, ProtocolError } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { scopedFakeServers } from '../test/fake-server.js';
import { Client } from './client.js';
import { open } from './multi.js';

const serve = scopedFakeServers();
const bytes = (...v: number[]) => new Uint8Array(v);

describe('Connection: regressions', () => {
  test('after an aborted readInto(), the late reply does not write into the caller buffer', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r = await p.request();
      await new Promise((res) => setTimeout(res, 50));
      p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(Number(r.length)).fill(9) });
      const next = await p.request();
      p.chunk(next.cookie, { kind: 'offset-data', offset: next.offset, data: new Uint8Array(Number(next.length)).fill(5) });
    });
    const conn = await open(srv.uri);
    const buf = new Uint8Array(4096).fill(1);
    const ac = new AbortController();
    const reading = conn.readInto(buf, 0, { signal: ac.signal });
    ac.abort(new Error('changed my mind'));
    await expect(reading).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED', cause: new Error('changed my mind') });
    buf.fill(2); // the caller reuses its buffer at once
    expect([...(await conn.read(0, 8))]).toEqual([5, 5, 5, 5, 5, 5, 5, 5]); // the late reply came and went
    expect(buf.every((b) => b === 2)).toBe(true);
  });

  test('a READ answered with overlapping chunks and a gap, then DONE, rejects (not zeroes) and fails the connection', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const r = await p.request();
      p.chunk(r.cookie, { kind: 'offset-data', offset: 0n, data: bytes(1, 2, 3, 4) }, false);
      p.chunk(r.cookie, { kind: 'offset-data', offset: 2n, data: bytes(3, 4, 5, 6) }, false); // overlaps 2..4; 6..8 never comes
      p.chunk(r.cookie, { kind: 'none' });
    });
    const conn = await open(srv.uri);
    const err = await conn.read(0, 8).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/overlaps bytes an earlier chunk described/);
    expect(conn.state).toBe('failed');
  });

  test('BLOCK_STATUS extents whose first N-1 lengths already pass the requested length: a protocol error', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ contexts: { 'base:allocation': 1 } });
      const r = await p.request();
      p.chunk(r.cookie, {
        kind: 'block-status',
        contextId: 1,
        extents: [
          { length: r.length, flags: 0 },
          { length: 512n, flags: 3 },
        ],
      });
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { metaContexts: ['base:allocation'] });
    await expect(conn.blockStatus(0, 4096)).rejects.toThrow(/first 1 extents already cover 4096 bytes of the 4096 asked/);
  });

  test('detach() fails loudly when the socket cannot stop reading, and the connection stays usable', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ structured: false });
      const r = await p.request();
      p.simple(r.cookie);
    });
    const client = await Client.connect(srv.uri);
    const conn = await client.go('', { structuredReplies: false });
    const socket = (conn as unknown as { core: { transport: { socket: { _handle: Record<string, unknown> } } } }).core.transport.socket;
    socket._handle.readStop = undefined; // a handle that cannot stop reading
    expect(() => conn.detach()).toThrow(NbdUnsupportedError);
    expect(() => conn.detach()).toThrow(/cannot stop reading/);
    expect(conn.state).toBe('transmitting');
    await conn.flush();
  });

  test('strict: false relaxes safe rules only (a NONE chunk without DONE is ignored; data past the request still fails)', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      const w = await p.request();
      p.chunk(w.cookie, { kind: 'none' }, false);
      p.chunk(w.cookie, { kind: 'none' });
      const r = await p.request();
      p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset + 2n, data: bytes(1, 2, 3) });
    });
    const conn = await open(srv.uri, { strict: false });
    expect(conn.strict).toBe(false);
    await conn.write(bytes(1), 0);
    await expect(conn.read(0, 4)).rejects.toThrow(/outside the request/);
  });

  test('an aborted disconnect() closes at once: requests in flight reject with NbdClosedError', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      await p.request(); // never answered
      await new Promise(() => {});
    });
    const conn = await open(srv.uri);
    const pending = conn.flush();
    const ac = new AbortController();
    const leaving = conn.disconnect({ signal: ac.signal });
    await expect(conn.read(0, 1)).rejects.toThrow(/closing \(disconnect\(\) was called\)/);
    ac.abort();
    await expect(leaving).rejects.toMatchObject({ code: 'NBD_ERR_ABORTED' });
    await expect(pending).rejects.toMatchObject({ code: 'NBD_ERR_CLOSED' });
    expect(conn.state).toBe('closed');
  });

  test('readLent lends a view until release(); using releases it', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
      for (;;) {
        const r = await p.request().catch(() => undefined);
        if (!r || r.type === Command.DISC) return;
        p.chunk(r.cookie, { kind: 'offset-data', offset: r.offset, data: new Uint8Array(Number(r.length)).fill(Number(r.offset) >> 16) });
      }
    });
    const conn = await open(srv.uri);
    const lent = await conn.readLent(65536, 65536);
    expect(lent.data.length).toBe(65536);
    expect(lent.data[0]).toBe(1);
    const { release } = lent; // works destructured too
    release();
    lent.release(); // twice is harmless
    {
      using again = await conn.readLent(131072, 4096);
      expect(again.data[4095]).toBe(2);
    }
    await conn.disconnect();
  });
});
