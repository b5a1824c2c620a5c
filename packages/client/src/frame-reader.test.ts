// The frame reader over a fake transport: bytes in through the ByteSink, frames out
// to one consumer at a time; nothing taken from the arena pool once it stopped.

import { type ByteSink, Errno, encodeChunk, encodeSimpleReply, ProtocolError, type Transport } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { clientArenaPool, FrameReader } from './frame-reader.js';

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

// The read arenas as the client uses them (ported from the tests of the former intake.ts):
// reads of `readSize` bytes at most, frames consumed synchronously, views kept or lent.
describe('FrameReader: read arenas with the client policy', () => {
  /** A structured OFFSET_DATA chunk whose payload is `length` bytes of `fill`. */
  const dataChunk = (cookie: number, length: number, fill: number) =>
    encodeChunk(BigInt(cookie), { kind: 'offset-data', offset: 0n, data: new Uint8Array(length).fill(fill) });

  /** A reader in transmission collecting each chunk's data view (kept for good if `keep`). */
  function reader(keep = false) {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    r.startTransmission(false);
    const got: Uint8Array[] = [];
    r.consume((f) => {
      if (f.kind === 'chunk') {
        if (keep) r.arenas.keep(f.payload);
        got.push(f.payload.subarray(8));
      }
      return true;
    });
    return { r, sink: box.sink!, got };
  }

  test('payloads spanning many reads and arena ends arrive whole, as views, none overwritten while kept', () => {
    const { r, sink, got } = reader(true);
    const sizes = [300_000, 1_000_000, 700_000, 1_500_000, 5, 900_000, 2_500_000, 64 * 1024];
    deliver(sink, Buffer.concat(sizes.map((n, i) => dataChunk(i + 1, n, i + 1))), 200_000);
    expect(got.map((p) => p.length)).toEqual(sizes);
    // More traffic after they were kept: they must not change.
    deliver(sink, Buffer.concat([dataChunk(99, 3_000_000, 0xee), dataChunk(100, 10, 0xee)]), 150_000);
    got.slice(0, sizes.length).forEach((p, i) => {
      expect(p.every((b) => b === i + 1)).toBe(true);
      if (p.length >= 64 * 1024) expect(p.buffer.byteLength).toBeGreaterThanOrEqual(2 * 1024 * 1024); // a view into an arena, not a copy
    });
    r.stop();
  });

  test('new arenas start between frames: almost no bytes are moved from one arena to the next', () => {
    const { r, sink, got } = reader(true);
    let moved = 0;
    const drain = r.decoder.drain.bind(r.decoder);
    r.decoder.drain = () => {
      const rest = drain();
      moved += rest.length;
      return rest;
    };
    for (let i = 0; i < 64; i++) deliver(sink, dataChunk(i + 1, 256 * 1024, i + 1), 200_000);
    expect(got).toHaveLength(64);
    got.forEach((p, i) => expect(p.every((b) => b === ((i + 1) & 0xff))).toBe(true));
    // Once, the small arena's bytes as the connection turns busy; then at most a header's worth per frame.
    expect(moved).toBeLessThan(16 * 1024 + 64 * 32);
    r.stop();
  });

  test('a chunk header claiming a huge payload does not size an allocation by itself', () => {
    const { r, sink } = reader();
    const header = dataChunk(1, 8, 0).slice(0, 20);
    new DataView(header.buffer).setUint32(16, 32 * 1024 * 1024); // claims 32 MiB, sends none of it
    deliver(sink, header, 1 << 20);
    expect(r.decoder.wanted).toBe(32 * 1024 * 1024);
    expect(sink.buffer().buffer.byteLength).toBeLessThanOrEqual(2 * 1024 * 1024);
    r.stop();
  });

  test('a frame larger than an arena grows into larger arenas as it arrives, and arrives whole', () => {
    const { r, sink, got } = reader();
    deliver(sink, dataChunk(1, 5_000_000, 7), 1 << 20);
    expect(got).toHaveLength(1);
    expect(got[0]!.length).toBe(5_000_000);
    expect(got[0]!.every((b) => b === 7)).toBe(true);
    r.stop();
  });

  test('lent views come back and their arenas are reused; kept ones are never written again', () => {
    const { r, sink, got } = reader();
    const seen = new Set<ArrayBufferLike>();
    const kept: { view: Uint8Array; fill: number }[] = [];
    let reused = 0;
    for (let round = 0; round < 40; round++) {
      deliver(sink, dataChunk(round + 1, 256 * 1024, round + 1), 100_000);
      const p = got.shift()!;
      expect(p.every((b) => b === round + 1)).toBe(true);
      if (seen.has(p.buffer)) reused++;
      seen.add(p.buffer);
      if (round % 10 === 0) {
        r.arenas.keep(p);
        kept.push({ view: p, fill: round + 1 });
      } else {
        r.arenas.hold(p); // lent: used at once and given back
        r.arenas.release(p);
      }
    }
    expect(reused).toBeGreaterThan(0);
    expect(seen.size).toBeLessThan(12); // 40 × 256 KiB = 10 MiB through a handful of 2 MiB arenas
    for (const k of kept) expect(k.view.every((b) => b === k.fill)).toBe(true);
    r.stop();
  });

  test('a view still lent keeps its arena out of reuse until it is released', () => {
    clientArenaPool().clear(); // spares left by earlier tests would take its place
    const { r, sink, got } = reader();
    deliver(sink, dataChunk(1, 256 * 1024, 1), 1 << 20);
    const held = got.shift()!;
    r.arenas.hold(held);
    for (let i = 0; i < 30; i++) {
      deliver(sink, dataChunk(i + 2, 256 * 1024, 2), 1 << 20);
      const p = got.shift()!;
      r.arenas.hold(p);
      r.arenas.release(p);
    }
    expect(held.every((b) => b === 1)).toBe(true);
    const spares = clientArenaPool().spares;
    r.arenas.release(held);
    expect(clientArenaPool().spares).toBe(spares + 1); // given back: its arena joins the spares
    // The current arena is rewound in place while nothing holds it; hold one of its views, and
    // the next arena is the spare: written again.
    deliver(sink, dataChunk(39, 256 * 1024, 3), 1 << 20);
    r.arenas.hold(got.shift()!);
    let again = false;
    for (let i = 0; i < 30; i++) {
      deliver(sink, dataChunk(i + 40, 256 * 1024, 3), 1 << 20);
      const p = got.shift()!;
      again ||= p.buffer === held.buffer;
    }
    expect(again).toBe(true);
    r.stop();
  });

  test('during the handshake reads go into small arenas only', () => {
    const { transport, box } = fakeTransport();
    const r = new FrameReader(transport);
    expect(box.sink!.buffer().buffer.byteLength).toBe(16 * 1024);
    expect(r.arenas.large).toBe(false);
    r.stop();
  });
});
