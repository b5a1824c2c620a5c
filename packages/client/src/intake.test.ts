// The read arenas, driven the way net.Socket's `onread` does: ask for space, the
// "kernel" fills part of it, the callback says how much.
import { encodeChunk } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { Intake } from './intake.js';

/** A structured OFFSET_DATA chunk whose payload is `length` bytes of `fill`. */
function dataChunk(cookie: number, length: number, fill: number): Uint8Array {
  return encodeChunk(BigInt(cookie), { kind: 'offset-data', offset: 0n, data: new Uint8Array(length).fill(fill) }, { done: true });
}

/** Delivers `bytes` in reads of at most `readSize`, as libuv would into the space offered. */
function feed(intake: Intake, bytes: Uint8Array, readSize: number): void {
  for (let off = 0; off < bytes.length; ) {
    const space = intake.onread.buffer();
    const n = Math.min(readSize, space.length, bytes.length - off);
    space.set(bytes.subarray(off, off + n));
    intake.onread.callback(n);
    off += n;
  }
}

function transmission(): Intake {
  const intake = new Intake();
  intake.decoder.startTransmission(false);
  intake.keepAll = false;
  return intake;
}

/**
 * Collects the payload of every frame decoded. Like the Connection, a view that
 * outlives the read must be kept (or lent) at once: `keep` says which.
 */
function collect(intake: Intake, keep = false): Uint8Array[] {
  const out: Uint8Array[] = [];
  intake.onBytes = () => {
    for (let f = intake.decoder.next(); f; f = intake.decoder.next()) {
      if (f.kind !== 'chunk') continue;
      if (keep) intake.keep(f.payload);
      out.push(f.payload.subarray(8));
    }
  };
  return out;
}

describe('Intake (read arenas)', () => {
  test('payloads spanning many reads and arena ends arrive whole, as views, none overwritten while kept', () => {
    const intake = transmission();
    const got = collect(intake, true);
    const sizes = [300_000, 1_000_000, 700_000, 1_500_000, 5, 900_000, 2_500_000, 64 * 1024];
    const stream = Buffer.concat(sizes.map((n, i) => dataChunk(i + 1, n, i + 1)));
    feed(intake, stream, 200_000);
    expect(got.map((p) => p.length)).toEqual(sizes);
    // More traffic after they were kept: they must not change.
    feed(intake, Buffer.concat([dataChunk(99, 3_000_000, 0xee), dataChunk(100, 10, 0xee)]), 150_000);
    got.slice(0, sizes.length).forEach((p, i) => {
      expect(p.every((b) => b === i + 1)).toBe(true);
      expect(p.buffer.byteLength).toBeGreaterThanOrEqual(2 * 1024 * 1024); // a view into an arena, not a copy
    });
  });

  test('new arenas start between frames: almost no bytes are moved from one arena to the next', () => {
    const intake = transmission();
    const got = collect(intake, true);
    let moved = 0;
    const drain = intake.decoder.drain.bind(intake.decoder);
    intake.decoder.drain = () => {
      const rest = drain();
      moved += rest.length;
      return rest;
    };
    const frames = Array.from({ length: 64 }, (_, i) => dataChunk(i + 1, 256 * 1024, i + 1));
    for (const f of frames) feed(intake, f, 200_000);
    expect(got).toHaveLength(64);
    got.forEach((p, i) => expect(p.every((b) => b === ((i + 1) & 0xff))).toBe(true));
    expect(moved).toBeLessThan(64 * 32); // at most a header's worth per frame, not part of a payload
  });

  test('a chunk header claiming a huge payload does not size an allocation by itself', () => {
    const intake = transmission();
    collect(intake);
    const header = dataChunk(1, 8, 0).slice(0, 20);
    new DataView(header.buffer).setUint32(16, 32 * 1024 * 1024); // claims 32 MiB, sends none of it
    feed(intake, header, 1 << 20);
    expect(intake.decoder.wanted).toBe(32 * 1024 * 1024);
    expect(intake.onread.buffer().buffer.byteLength).toBeLessThanOrEqual(2 * 1024 * 1024);
  });

  test('a frame larger than an arena grows into larger arenas as it arrives, and arrives whole', () => {
    const intake = transmission();
    const got = collect(intake);
    feed(intake, dataChunk(1, 5_000_000, 7), 1 << 20);
    expect(got).toHaveLength(1);
    expect(got[0]!.length).toBe(5_000_000);
    expect(got[0]!.every((b) => b === 7)).toBe(true);
  });

  test('lent views come back and their arenas are reused; kept ones are never written again', () => {
    const intake = transmission();
    const got = collect(intake);
    const seen = new Set<ArrayBufferLike>();
    const kept: { view: Uint8Array; fill: number }[] = [];
    let reused = 0;
    for (let round = 0; round < 40; round++) {
      feed(intake, dataChunk(round + 1, 256 * 1024, round + 1), 100_000);
      const p = got.shift()!;
      expect(p.every((b) => b === round + 1)).toBe(true);
      if (seen.has(p.buffer)) reused++;
      seen.add(p.buffer);
      if (round % 10 === 0) {
        intake.keep(p);
        kept.push({ view: p, fill: round + 1 });
      } else intake.lend(p)(); // used at once and given back
    }
    expect(reused).toBeGreaterThan(0);
    expect(seen.size).toBeLessThan(12); // 40 × 256 KiB = 10 MiB through a handful of 2 MiB arenas
    for (const k of kept) expect(k.view.every((b) => b === k.fill)).toBe(true);
  });

  test('a view still lent keeps its arena out of reuse until it is released (twice is harmless)', () => {
    const intake = transmission();
    const got = collect(intake);
    feed(intake, dataChunk(1, 256 * 1024, 1), 1 << 20);
    const held = got.shift()!;
    const release = intake.lend(held);
    for (let i = 0; i < 30; i++) {
      feed(intake, dataChunk(i + 2, 256 * 1024, 2), 1 << 20);
      const p = got.shift()!;
      intake.lend(p)();
    }
    expect(held.every((b) => b === 1)).toBe(true);
    release();
    release();
    // Given back: its arena joins the spares and is written again.
    let again = false;
    for (let i = 0; i < 30; i++) {
      feed(intake, dataChunk(i + 40, 256 * 1024, 3), 1 << 20);
      const p = got.shift()!;
      again ||= p.buffer === held.buffer;
      intake.lend(p)();
    }
    expect(again).toBe(true);
  });

  test('handshake arenas are kept (keepAll); chunks from a Duplex pass through untouched', () => {
    const intake = new Intake();
    expect(intake.keepAll).toBe(true);
    const d = transmission();
    const got = collect(d);
    const chunk = dataChunk(1, 10, 3);
    d.decoder.push(chunk); // what listen()'s 'data' handler does
    d.onBytes();
    expect(got[0]!.buffer).toBe(chunk.buffer);
    expect(d.lend(got[0]!)).toBeTypeOf('function'); // not an arena view: nothing to track
  });
});
