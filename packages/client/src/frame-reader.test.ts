// The frame reader over a fake transport: bytes in through the ByteSink, frames out
// to one consumer at a time; nothing taken from the arena pool once it stopped.
import { describe, expect, test } from 'vitest';
import { type ByteSink, Errno, ProtocolError, type Transport, encodeChunk, encodeSimpleReply } from '@nbd/protocol';
import { FrameReader, clientArenaPool } from './frame-reader.js';

/** A transport that only hands its sink to the test. */
function fakeTransport() {
  const box: { sink?: ByteSink } = {};
  const t = { peer: { address: 'fake' }, read: (s: ByteSink) => void (box.sink = s), resume: () => {}, rebuffer: () => {}, closed: false };
  return { transport: t as unknown as Transport, box };
}

/** Delivers `bytes` as a transport would: into the sink's buffers, `n` at a time. */
function deliver(sink: ByteSink, bytes: Uint8Array, n = 7): void {
  for (let off = 0; off < bytes.length; ) {
    const dst = sink.buffer();
    const k = Math.min(n, dst.length, bytes.length - off);
    dst.set(bytes.subarray(off, off + k));
    off += k;
    sink.filled(k);
  }
}

describe('FrameReader', () => {
  test('frames reach the consumer as they complete; without a consumer they wait in the decoder', () => {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    r.startTransmission(false);
    const seen: string[] = [];
    deliver(box.sink!, encodeChunk(1n, { kind: 'none' }));
    expect(r.decoder.buffered).toBe(20); // no consumer yet
    r.consume((f) => {
      seen.push(f.kind === 'chunk' ? `chunk ${f.header.cookie}` : f.kind);
      return true;
    });
    deliver(box.sink!, encodeSimpleReply({ cookie: 2n, error: Errno.EIO }));
    expect(seen).toEqual(['chunk 1', 'simple-reply']);
    r.stop();
  });

  test('a consumer returning false stops after that frame; the next consume() picks up the rest', () => {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    r.startTransmission(false);
    const seen: bigint[] = [];
    r.consume((f) => {
      if (f.kind === 'chunk') seen.push(f.header.cookie);
      return false;
    });
    deliver(box.sink!, new Uint8Array([...encodeChunk(1n, { kind: 'none' }), ...encodeChunk(2n, { kind: 'none' })]), 100);
    expect(seen).toEqual([1n]);
    r.consume((f) => (f.kind === 'chunk' && seen.push(f.header.cookie), true));
    expect(seen).toEqual([1n, 2n]);
    r.stop();
  });

  test('a malformed frame ends the reader with a ProtocolError, once', () => {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    r.startTransmission(false);
    const ends: unknown[] = [];
    r.onEnd = (e) => ends.push(e);
    r.consume(() => true);
    deliver(box.sink!, new Uint8Array(32).fill(0xab));
    expect(ends).toHaveLength(1);
    expect(ends[0]).toBeInstanceOf(ProtocolError);
    box.sink!.ended();
    expect(ends).toHaveLength(1);
  });

  test('once stopped, reads take nothing from the pool and ask the transport to stop', () => {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    r.startTransmission(false);
    r.consume(() => true);
    const pool = clientArenaPool();
    deliver(box.sink!, encodeChunk(1n, { kind: 'offset-data', offset: 0n, data: new Uint8Array(300_000) }), 64 * 1024);
    r.stop();
    const leased = pool.leased;
    for (let i = 0; i < 10; i++) {
      const b = box.sink!.buffer();
      expect(box.sink!.filled(b.length)).toBe(false);
    }
    expect(pool.leased).toBe(leased);
  });
});
