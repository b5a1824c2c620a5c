// Helpers of the hostile-input table's client side: hostile servers scripted with the
// protocol codecs (packages/client/test/fake-server.ts), a bystander connection to a
// well-behaved server (ours, in its own process), and the checks run after every row.

import { Client, type Connection, open } from '@nbd/client';
import { encodeGreeting, encodeOptionReply, OptionReply, ProtocolError } from '@nbd/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakePeer, scopedFakeServers } from '../../packages/client/test/fake-server.js';
import { type HostileCase, MiB, ServerChild, tally } from './support.js';

export const serve = scopedFakeServers();

export type Script = (p: FakePeer) => Promise<void>;
export const connectTo = async (script: Script, o: Parameters<typeof Client.connect>[1] = {}) =>
  Client.connect((await serve(script)).uri, { handshakeTimeout: 2000, ...o });

/** A connection (structured replies; base:allocation known as id 1) to a server that then runs `after`. */
export async function transmitting(
  after: (p: FakePeer) => Promise<void>,
  o: { extended?: boolean; structured?: boolean; strict?: boolean } = {},
): Promise<Connection> {
  const srv = await serve(async (p) => {
    await p.negotiate({ contexts: { 'base:allocation': 1 }, extended: o.extended, structured: o.structured });
    await after(p);
  });
  const client = await Client.connect(srv.uri, { handshakeTimeout: 2000 });
  return client.go('', {
    metaContexts: o.structured === false ? [] : ['base:allocation'],
    extendedHeaders: o.extended,
    structuredReplies: o.structured,
    strict: o.strict,
  });
}

export const u8 = (...v: number[]) => new Uint8Array(v);

/** Sends raw option-reply bytes after the first option arrives. */
export const afterFirstOption =
  (bytes: (option: number) => Uint8Array): Script =>
  async (p) => {
    p.send(encodeGreeting({ style: 'newstyle', flags: 3 }));
    await p.frame();
    p.decoder.startOptions();
    const f = await p.frame();
    p.send(bytes(f.kind === 'option' ? f.option : 0));
    await new Promise((r) => setTimeout(r, 3000));
  };

/** Refuses every option (ERR_UNSUP) but GO, which gets `bytes`. */
export const answeringGo =
  (bytes: (option: number) => Uint8Array): Script =>
  async (p) => {
    p.send(encodeGreeting({ style: 'newstyle', flags: 3 }));
    await p.frame();
    p.decoder.startOptions();
    for (;;) {
      const f = await p.frame();
      if (f.kind !== 'option') return;
      if (f.option === 7) p.send(bytes(f.option));
      else p.send(encodeOptionReply(f.option, { kind: 'error', code: OptionReply.ERR_UNSUP, message: '' }));
    }
  };

/** Writes `burst` again and again (as fast as the client reads) until the connection closes. */
export function stream(p: FakePeer, burst: Uint8Array): Promise<void> {
  const closed = new Promise<void>((r) => p.socket.once('close', () => r()));
  const pump = () => {
    while (!p.socket.destroyed && p.socket.write(burst));
    if (!p.socket.destroyed) p.socket.once('drain', pump);
  };
  pump();
  return closed;
}

/** `reply` repeated to fill about 256 KiB (one write of a streaming server). */
export const burstOf = (reply: Uint8Array): Uint8Array =>
  Buffer.concat(Array.from({ length: Math.ceil((256 * 1024) / reply.length) }, () => reply));

/**
 * A server that streams `reply(option)` forever in answer to the options `streams`
 * picks (after `ack` ACKs it first, if set), and refuses the others with ERR_UNSUP.
 */
export const streamingReplies =
  (streams: (option: number) => boolean, reply: (option: number) => Uint8Array, o: { ackFirst?: boolean } = {}): Script =>
  async (p) => {
    p.send(encodeGreeting({ style: 'newstyle', flags: 3 }));
    await p.frame();
    p.decoder.startOptions();
    for (;;) {
      const f = await p.frame().catch(() => undefined);
      if (f?.kind !== 'option') return;
      if (!streams(f.option)) {
        p.send(encodeOptionReply(f.option, { kind: 'error', code: OptionReply.ERR_UNSUP, message: '' }));
        continue;
      }
      if (o.ackFirst) p.send(encodeOptionReply(f.option, { kind: 'ack' }));
      await stream(p, burstOf(reply(f.option)));
      return;
    }
  };

/** Runs `work` while sampling this process's RSS every 5 ms: its result, the peak growth in bytes, and the time taken. */
export async function measured<T>(work: () => Promise<T>): Promise<{ value: T; grew: number; ms: number }> {
  const start = process.memoryUsage().rss;
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const t0 = Date.now();
  try {
    const value = await work();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { value, grew: peak - start, ms: Date.now() - t0 };
  } finally {
    clearInterval(timer);
  }
}

/** The error `p` rejects with (the test fails if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('expected a rejection'),
    (e: unknown) => e,
  );
}

export function rawReplyHeader(option: number, type: number, length: number): Uint8Array {
  const b = new Uint8Array(20);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, 0x0003e889045565a9n);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, length);
  return b;
}

export async function expectProtocolError(p: Promise<unknown>, rule: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ProtocolError);
  expect((e as Error).message).toMatch(rule);
}

/**
 * Registers the rows: after each, this process is alive (the test goes on), a bystander
 * connection to a well-behaved server still writes and reads back, and RSS has not grown
 * by more than 200 MiB since the table started.
 */
export function clientTable(title: string, cases: readonly HostileCase<void>[]): void {
  let good: ServerChild;
  let bystander: Connection;
  let rssAtStart = 0;
  beforeAll(async () => {
    good = await ServerChild.start();
    bystander = await open({ path: good.socket }, { exportName: 'mem' });
    rssAtStart = process.memoryUsage().rss;
  });
  afterAll(async () => {
    await bystander?.disconnect();
    await good?.stop();
  });
  describe(title, () => {
    let n = 0;
    for (const c of cases) {
      it(`${c.sends} → ${c.we} (spec: ${c.spec})`, async () => {
        await c.run();
        const data = new Uint8Array(4096).fill(++n);
        await bystander.write(data, n * 4096);
        expect(await bystander.read(n * 4096, 4096)).toEqual(data);
        expect(process.memoryUsage().rss - rssAtStart).toBeLessThan(200 * MiB);
      });
    }
    afterAll(() => console.log(tally(title, cases)));
  });
}
