import { describe, expect, test } from 'vitest';
import { type ArenaPolicy, ArenaPool, ReadArenas } from './arenas.js';
import { Command } from './constants.js';
import { ClientStreamDecoder } from './frames.js';
import { encodeRequest } from './transmission.js';

const policy: ArenaPolicy = { smallSize: 1024, largeSize: 64 * 1024, maxRead: 16 * 1024, minRead: 4096, spares: 2 };

function setup(p: ArenaPolicy = policy) {
  const pool = new ArenaPool(p);
  const decoder = new ClientStreamDecoder({ maxPayload: 1 << 20 });
  decoder.startTransmission(false);
  const arenas = new ReadArenas(pool, decoder);
  /** What a transport does: fill buffer() regions from `bytes`. */
  const feed = (bytes: Uint8Array) => {
    for (let off = 0; off < bytes.length; ) {
      const dst = arenas.buffer();
      expect(dst.length).toBeGreaterThan(0);
      const n = Math.min(dst.length, bytes.length - off);
      dst.set(bytes.subarray(off, off + n));
      arenas.filled(n);
      off += n;
    }
  };
  return { pool, decoder, arenas, feed };
}

const write = (cookie: number, length: number, fill: number) => {
  const header = encodeRequest({ flags: 0, type: Command.WRITE, cookie: BigInt(cookie), offset: 0n, length: BigInt(length) });
  const out = new Uint8Array(header.length + length).fill(fill);
  out.set(header);
  return out;
};

describe('ReadArenas', () => {
  test('a quiet connection reads into a small arena; traffic moves it to a pooled large one', () => {
    const { pool, decoder, arenas, feed } = setup();
    expect(arenas.large).toBe(false);
    feed(write(1, 100, 1));
    expect(decoder.next()).toMatchObject({ kind: 'request' });
    expect(arenas.large).toBe(false);
    expect(pool.leased).toBe(0);
    feed(write(2, 5000, 2)); // more than the small arena holds
    const f = decoder.next();
    expect(f?.kind === 'request' && f.payload?.length).toBe(5000);
    expect(arenas.large).toBe(true);
    expect(pool.leased).toBe(1);
  });

  test('payloads held stay intact while later reads land; released arenas go back to the pool', () => {
    const { pool, decoder, arenas, feed } = setup();
    const held: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      feed(write(i, 3000, i));
      const f = decoder.next();
      if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
      arenas.hold(f.payload);
      held.push(f.payload);
    }
    expect(pool.leased).toBeGreaterThan(1); // 120 KB of held payloads span several 64 KiB arenas
    expect(arenas.pinnedBytes).toBeGreaterThan(0);
    held.forEach((p, i) => expect(p.every((b) => b === i)).toBe(true));
    for (const p of held) arenas.release(p);
    expect(arenas.pinnedBytes).toBe(0);
    expect(pool.leased).toBe(1); // only the current arena
    expect(pool.spares).toBeGreaterThan(0);
  });

  test('a frame split across reads is one view of one arena, not a copy', () => {
    const { decoder, feed } = setup();
    feed(write(1, 2000, 1)); // go large
    decoder.next();
    const bytes = write(2, 10_000, 7);
    feed(bytes.subarray(0, 3000));
    expect(decoder.next()).toBeUndefined();
    feed(bytes.subarray(3000));
    const f = decoder.next();
    if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
    expect(f.payload.length).toBe(10_000);
    expect(f.payload.buffer.byteLength).toBe(policy.largeSize);
  });

  test('a frame larger than a large arena grows an arena to twice what arrived, never to what it claims', () => {
    const { pool, decoder, arenas, feed } = setup();
    const claimed = 512 * 1024;
    const bytes = write(1, claimed, 3);
    feed(bytes.subarray(0, 100_000));
    const sizes = new Set<number>();
    sizes.add(arenas.buffer().buffer.byteLength);
    // Nothing larger than twice the bytes received was allocated.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(2 * 100_000 + policy.minRead);
    feed(bytes.subarray(100_000));
    const f = decoder.next();
    expect(f?.kind === 'request' && f.payload?.length).toBe(claimed);
    expect(pool.allocated).toBeLessThan(10);
  });

  test('trim gives a quiet large arena back and reads go to a small one again', () => {
    const { pool, decoder, arenas, feed } = setup();
    feed(write(1, 5000, 1));
    decoder.next();
    expect(arenas.large).toBe(true);
    expect(arenas.trim()).toBe(true);
    expect(arenas.large).toBe(false);
    expect(pool.leased).toBe(0);
    expect(pool.spares).toBe(1);
    feed(write(2, 10, 2));
    expect(decoder.next()).toMatchObject({ kind: 'request' });
  });

  test('trim keeps an arena that still holds a partial frame or a held view', () => {
    const { decoder, arenas, feed } = setup();
    const bytes = write(1, 5000, 1);
    feed(bytes.subarray(0, 4000));
    expect(arenas.large).toBe(true);
    expect(arenas.trim()).toBe(false); // a frame is under way
    feed(bytes.subarray(4000));
    const f = decoder.next();
    if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
    arenas.hold(f.payload);
    expect(arenas.trim()).toBe(false); // a view is held
    arenas.release(f.payload);
    expect(arenas.trim()).toBe(true);
  });

  test('during a handshake arenas stay small, grown only to the frame under way', () => {
    const { pool, decoder, arenas, feed } = setup();
    arenas.allowLarge = false;
    for (let i = 0; i < 50; i++) {
      feed(write(i, 700, i));
      decoder.next();
    }
    expect(pool.leased).toBe(0);
    feed(write(99, 3000, 9));
    expect(decoder.next()).toMatchObject({ kind: 'request' });
    expect(pool.leased).toBe(0);
    expect(arenas.buffer().buffer.byteLength).toBeLessThan(policy.largeSize);
  });

  test('the pool keeps at most `spares` arenas', () => {
    const pool = new ArenaPool(policy);
    const taken = [pool.take(policy.largeSize), pool.take(policy.largeSize), pool.take(policy.largeSize)];
    for (const t of taken) pool.give(t);
    expect(pool.spares).toBe(2);
    expect(pool.leased).toBe(0);
    expect(pool.take(policy.largeSize)).toBe(taken[1]);
  });

  test('a lease keeps its arena until released; releasing it again does not free what another lease holds', () => {
    const { pool, decoder, arenas, feed } = setup();
    const leases = [1, 2].map((i) => {
      feed(write(i, 5000, i));
      const f = decoder.next();
      if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
      return arenas.lease(f.payload);
    });
    expect(leases[0]!.bytes.buffer).toBe(leases[1]!.bytes.buffer); // one arena
    for (let i = 3; i < 40; i++) {
      feed(write(i, 3000, i)); // later reads move on to new arenas
      decoder.next();
    }
    const pinned = arenas.pinnedBytes;
    expect(pinned).toBe(policy.largeSize);
    leases[0]!.release();
    leases[0]!.release();
    expect(arenas.pinnedBytes).toBe(pinned); // the second lease still holds it
    expect(leases[1]!.bytes.every((b) => b === 2)).toBe(true);
    leases[1]!.release();
    expect(arenas.pinnedBytes).toBe(0);
    expect(pool.spares).toBeGreaterThan(0);
  });

  test('dispose returns the arena now, and a view held past it when released', () => {
    const { pool, decoder, arenas, feed } = setup();
    feed(write(1, 5000, 1));
    const f = decoder.next();
    if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
    arenas.hold(f.payload);
    arenas.dispose();
    expect(pool.leased).toBe(1);
    arenas.release(f.payload);
    expect(pool.leased).toBe(0);
  });
});
