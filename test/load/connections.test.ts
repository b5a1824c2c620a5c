// Load on a server in its own process (test/hostile/server-child.mjs): 1,000 concurrent
// connections with pipelined writes and verified reads, a flood of short connections,
// and 10,000 pipelined requests from a client that never reads its replies. Each
// prints the server's RSS and the time taken (the figures of the hardening report);
// 1,000 idle connections are in server-memory.test.ts.
import { connect } from 'node:net';
import { type Connection, open } from '@nbd/client';
import {
  ClientFlag,
  Command,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  Option,
  OptionReply,
  ReplyFlag,
  ServerStreamDecoder,
} from '@nbd/protocol';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { bystanderServed, MiB, ServerChild } from '../hostile/support.js';

// A fresh server for each scenario, so each one's RSS figures are its own.
let srv: ServerChild;
beforeEach(async () => {
  srv = await ServerChild.start({}, 128);
});
afterEach(async () => {
  await srv?.stop();
});

/** Samples the server's RSS (no GC) every `ms` while `work` runs; resolves with the peak in MiB. */
async function peakWhile(work: Promise<unknown>, ms = 250): Promise<number> {
  let peak = await srv.rss(false);
  let done = false;
  void work.finally(() => (done = true)).catch(() => {});
  while (!done) {
    await new Promise((r) => setTimeout(r, ms));
    peak = Math.max(peak, await srv.rss(false));
  }
  await work;
  return peak;
}

/** The bytes connection `i` writes as its `j`th block: every byte names both. */
function block(i: number, j: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let k = 0; k < size; k++) b[k] = (i * 31 + j * 7 + k) & 0xff;
  return b;
}

test('1,000 concurrent connections: pipelined writes, then pipelined reads, every byte checked', async () => {
  const N = 1000;
  const BLOCKS = 8;
  const SIZE = 8 * 1024; // 64 KiB per connection, 64 MiB in all
  const before = await srv.rss();
  const t0 = performance.now();
  const conns: Connection[] = [];
  for (let i = 0; i < N; i += 100) {
    conns.push(
      ...(await Promise.all(
        Array.from({ length: 100 }, () => open({ path: srv.socket }, { exportName: 'mem', handshakeTimeout: 30_000 })),
      )),
    );
  }
  const connected = performance.now();
  const work = Promise.all(
    conns.map(async (c, i) => {
      const base = i * BLOCKS * SIZE;
      await Promise.all(Array.from({ length: BLOCKS }, (_, j) => c.write(block(i, j, SIZE), base + j * SIZE)));
      const back = await Promise.all(Array.from({ length: BLOCKS }, (_, j) => c.read(base + j * SIZE, SIZE)));
      let bad = 0;
      back.forEach((b, j) => {
        const want = block(i, j, SIZE);
        for (let k = 0; k < SIZE; k++) if (b[k] !== want[k]) bad++;
      });
      return bad;
    }),
  );
  const peak = await peakWhile(work);
  const bad = (await work).reduce((a, b) => a + b, 0);
  const t1 = performance.now();
  expect(bad).toBe(0);
  expect(await srv.connections()).toBe(N);
  await Promise.all(conns.map((c) => c.disconnect()));
  console.log(
    `1,000 connections: connected in ${((connected - t0) / 1000).toFixed(1)} s, 8,000 writes + 8,000 verified reads (128 MiB) in ${((t1 - connected) / 1000).toFixed(1)} s; ` +
      `server RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB`,
  );
  expect(peak).toBeLessThan(600);
  await expect.poll(() => srv.connections(), { timeout: 10_000 }).toBe(0);
}, 120_000);

test('a flood of 5,000 short connections (handshake, one read, disconnect; 100 at a time): all served, none left over', async () => {
  const before = await srv.rss();
  const t0 = performance.now();
  let served = 0;
  const flood = (async () => {
    for (let round = 0; round < 50; round++) {
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const c = await open({ path: srv.socket }, { exportName: 'mem', handshakeTimeout: 30_000 });
          const b = await c.read(100 * MiB, 512); // never written: zeroes
          if (b.length === 512 && b.every((x) => x === 0)) served++;
          await c.disconnect();
        }),
      );
    }
  })();
  const peak = await peakWhile(flood);
  const secs = (performance.now() - t0) / 1000;
  expect(served).toBe(5000);
  await expect.poll(() => srv.connections(), { timeout: 10_000 }).toBe(0);
  const after = await srv.rss();
  console.log(
    `5,000 short connections in ${secs.toFixed(1)} s (${Math.round(5000 / secs)}/s); server RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)}, ${after.toFixed(0)} after`,
  );
  expect(peak).toBeLessThan(400);
}, 120_000);

test('10,000 pipelined 64 KiB READs from a client that does not read its replies: memory bounded, others served; once it reads, every reply comes', async () => {
  const before = await srv.rss();
  const s = connect(srv.socket);
  await new Promise((r) => s.once('connect', r));
  s.pause(); // never read
  const hello = [
    encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
    encodeOptionRequest({ kind: 'structured-reply' }),
    encodeOptionRequest({ kind: 'go', name: 'mem', requests: [] }),
  ];
  const reqs = Array.from({ length: 10_000 }, (_, i) =>
    encodeRequest({ type: Command.READ, flags: 0, cookie: BigInt(i), offset: 0n, length: 65536n }),
  );
  const t0 = performance.now();
  s.write(Buffer.concat([...hello, ...reqs])); // 655 MiB of replies asked for (offset 0 holds data: no holes)
  let peak = before;
  for (let i = 0; i < 8; i++) {
    await new Promise((r) => setTimeout(r, 250));
    peak = Math.max(peak, await srv.rss(false));
  }
  await bystanderServed(srv.socket, 3); // others are served meanwhile
  expect(srv.alive).toBe(true);
  // Now read: every reply comes (none was dropped while the server held back).
  const t1 = performance.now();
  const decoder = new ServerStreamDecoder();
  let answered = 0;
  await new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      decoder.push(d);
      for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
        if (f.kind === 'option-reply' && f.option === Option.GO && f.type === OptionReply.ACK) decoder.startTransmission(false);
        if (f.kind === 'chunk' && (f.header.flags & ReplyFlag.DONE) !== 0) answered++;
      }
      if (answered === 10_000) resolve();
    });
    s.resume();
  });
  const drained = (performance.now() - t1) / 1000;
  s.destroy();
  await expect.poll(() => srv.connections(), { timeout: 10_000 }).toBe(0);
  const after = await srv.rss();
  console.log(
    `10,000 unread 64 KiB READs: server RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB while unread (2 s), ` +
      `all 10,000 replies read in ${drained.toFixed(1)} s once the client read, ${after.toFixed(0)} MiB after close (${((performance.now() - t0) / 1000).toFixed(1)} s in all)`,
  );
  expect(answered).toBe(10_000);
  expect(peak - before).toBeLessThan(150);
}, 60_000);
