// A client that reads its replies slowly: 64 MiB written, then 512 MiB of READs asked for
// at once and read in sips (2 ms of reading every 30 ms, ~35 MiB/s against the GB/s the
// server could send). Backpressure (the reply writer's watermarks, the in-flight caps) holds the
// server's memory; the figures are printed for the report.
import { connect } from 'node:net';
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
import { afterAll, beforeAll, expect, test } from 'vitest';
import { bystanderServed, MiB, ServerChild } from '../hostile/support.js';

let srv: ServerChild;
beforeAll(async () => {
  srv = await ServerChild.start({}, 64);
});
afterAll(async () => {
  await srv?.stop();
});

test('a slow reader of 512 MiB of READ replies: server RSS stays bounded while it crawls', async () => {
  const mem = await srv.rss();
  const s = connect(srv.socket);
  await new Promise((r) => s.once('connect', r));
  const N = 2048; // 2048 × 256 KiB = 512 MiB
  const writes = Array.from({ length: 8 }, (_, i) =>
    Buffer.concat([
      encodeRequest({ type: Command.WRITE, flags: 0, cookie: BigInt(100_000 + i), offset: BigInt(i * 8 * MiB), length: BigInt(8 * MiB) }),
      Buffer.alloc(8 * MiB, 0x77),
    ]),
  );
  const reads = Array.from({ length: N }, (_, i) =>
    encodeRequest({ type: Command.READ, flags: 0, cookie: BigInt(i), offset: BigInt((i % 256) * 256 * 1024), length: 256n * 1024n }),
  );
  s.write(
    Buffer.concat([
      encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
      encodeOptionRequest({ kind: 'structured-reply' }),
      encodeOptionRequest({ kind: 'go', name: 'mem', requests: [] }),
      ...writes,
      ...reads,
    ]),
  );
  const decoder = new ServerStreamDecoder();
  let answered = 0;
  let bytes = 0;
  let peak = mem;
  const t0 = performance.now();
  s.pause();
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      decoder.push(d);
      for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
        if (f.kind === 'option-reply' && f.option === Option.GO && f.type === OptionReply.ACK) decoder.startTransmission(false);
        if ((f.kind === 'chunk' && (f.header.flags & ReplyFlag.DONE) !== 0) || f.kind === 'simple-reply') answered++;
      }
      if (answered === N + 8) resolve();
    });
  });
  const crawl = (async () => {
    let last = 0;
    while (answered < N + 8 && performance.now() - t0 < 20_000) {
      s.resume();
      await new Promise((r) => setTimeout(r, 2));
      s.pause();
      await new Promise((r) => setTimeout(r, 28));
      if (bytes - last > 16 * MiB) {
        last = bytes;
        peak = Math.max(peak, await srv.rss(false));
      }
    }
  })();
  await crawl;
  const crawled = bytes;
  const crawlSecs = (performance.now() - t0) / 1000;
  peak = Math.max(peak, await srv.rss(false));
  await bystanderServed(srv.socket, 9);
  s.resume(); // then read the rest at full speed
  await done;
  console.log(
    `slow reader: ${(crawled / MiB).toFixed(0)} MiB read in ${crawlSecs.toFixed(1)} s (${(crawled / MiB / crawlSecs).toFixed(1)} MiB/s), ` +
      `server RSS ${mem.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB (64 MiB of it the written export); all ${N} replies then read (${(bytes / MiB).toFixed(0)} MiB)`,
  );
  expect(answered).toBe(N + 8);
  expect(peak - mem).toBeLessThan(64 + 96);
  s.destroy();
}, 90_000);
