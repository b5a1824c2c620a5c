// Reading requests through the transport seam (NodeTransport → ReadArenas →
// ClientStreamDecoder, as a server connection does): requests and WRITE payloads
// come out intact whatever the read boundaries, on a real unix socket (direct arena
// reads) and on a plain Duplex (copied chunks); frames larger than an arena,
// oversized drains, bad magic, arenas pinned and reused.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Duplex, PassThrough } from 'node:stream';
import {
  ArenaPool,
  type ClientFrame,
  ClientStreamDecoder,
  Command,
  CommandFlag,
  encodeRequest,
  ReadArenas,
  type Request,
} from '@nbd/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeTransport } from './node-transport.js';

/** The server's large arena size. */
const ARENA_SIZE = 4 * 1024 * 1024;

/** What a server connection's reading is: a transport, its arenas and a request decoder. */
class Reader {
  readonly pool = new ArenaPool({ smallSize: 16 * 1024, largeSize: ARENA_SIZE, maxRead: 1024 * 1024, minRead: 64 * 1024, spares: 4 });
  readonly decoder: ClientStreamDecoder;
  readonly arenas: ReadArenas;
  readonly transport: NodeTransport;
  private paused = true;
  private parsing = false;
  private sink: ((f: ClientFrame) => void) | undefined;
  private onEnd: ((err: Error | undefined) => void) | undefined;
  private ended = false;

  constructor(stream: Duplex, limits: { extended: boolean; maxPayload: number; maxDrain: number }, leftover?: Uint8Array) {
    this.decoder = new ClientStreamDecoder({ maxPayload: limits.maxPayload, maxDrain: limits.maxDrain });
    this.decoder.startTransmission(limits.extended);
    this.arenas = new ReadArenas(this.pool, this.decoder);
    // Bytes read before this reader existed (a handshake's leftovers) land in the arenas first.
    for (let off = 0; leftover !== undefined && off < leftover.length; ) {
      const dst = this.arenas.buffer();
      const n = Math.min(dst.length, leftover.length - off);
      dst.set(leftover.subarray(off, off + n));
      this.arenas.filled(n);
      off += n;
    }
    this.transport = new NodeTransport(stream);
    this.transport.read({
      buffer: () => this.arenas.buffer(),
      filled: (n) => {
        this.arenas.filled(n);
        this.parse();
        return !this.paused;
      },
      ended: (err) => {
        this.ended = true;
        this.onEnd?.(err);
      },
    });
    this.transport.readDirect();
  }

  get mode(): 'direct' | 'copy' | undefined {
    return this.transport.mode;
  }

  startPush(sink: (f: ClientFrame) => void, onEnd: (err: Error | undefined) => void): void {
    this.sink = sink;
    this.onEnd = onEnd;
    this.resume();
  }

  pause(): void {
    this.paused = true;
    this.transport.pause();
  }

  resume(): void {
    this.paused = false;
    this.parse();
    if (!this.paused && !this.ended) this.transport.resume();
  }

  private parse(): void {
    if (this.parsing || this.sink === undefined) return;
    this.parsing = true;
    try {
      while (!this.paused) {
        const f = this.decoder.next();
        if (f === undefined) break;
        if (f.kind === 'request' && f.payload) this.arenas.hold(f.payload);
        this.sink(f);
      }
    } catch (e) {
      this.transport.destroy(e as Error);
    } finally {
      this.parsing = false;
    }
  }
}

interface Sent {
  request: Request;
  payload?: Uint8Array;
}

/** A deterministic mix of READs and WRITEs, some payloads larger than an arena. */
function workload(seed: number, count: number, extended = false): { sent: Sent[]; bytes: Uint8Array[] } {
  let x = seed;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const sizes = [1, 512, 4096, 65_536, 262_144, 1_000_003, ARENA_SIZE + 12_345];
  const sent: Sent[] = [];
  const bytes: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const write = rnd() < 0.7;
    const len = sizes[Math.floor(rnd() * (i % 10 === 9 ? sizes.length : sizes.length - 1))]!;
    const request: Request = {
      flags: write && extended ? CommandFlag.PAYLOAD_LEN : 0,
      type: write ? Command.WRITE : Command.READ,
      cookie: BigInt(i) * 0x1_0000_0001n,
      offset: BigInt(i) * 4096n,
      length: BigInt(len),
    };
    bytes.push(encodeRequest(request, extended));
    if (write) {
      const payload = new Uint8Array(len);
      for (let j = 0; j < len; j++) payload[j] = (i * 31 + j * 7 + (j >> 8)) & 0xff;
      bytes.push(payload);
      sent.push({ request, payload });
    } else sent.push({ request });
  }
  return { sent, bytes };
}

function check(got: ClientFrame[], sent: Sent[]): void {
  expect(got.length).toBe(sent.length);
  got.forEach((f, i) => {
    if (f.kind !== 'request') throw new Error(`frame ${i} is ${f.kind}`);
    expect(f.request).toEqual(sent[i]!.request);
    const want = sent[i]!.payload;
    if (want === undefined) expect(f.payload).toBeUndefined();
    // Compared as Buffers: fast, and a mismatch still shows where.
    else expect(Buffer.compare(Buffer.from(f.payload!), Buffer.from(want))).toBe(0);
  });
}

let server: Server | undefined;
let dir: string | undefined;
afterEach(() => {
  server?.close();
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A connected unix socket pair: [server side (paused), client side]. */
async function socketPair(): Promise<[Socket, Socket]> {
  dir = mkdtempSync(join(tmpdir(), 'nbd-reader-'));
  const path = join(dir, 's.sock');
  const accepted = new Promise<Socket>((resolve) => {
    server = createServer({ pauseOnConnect: true }, resolve);
  });
  await new Promise<void>((resolve) => server!.listen(path, resolve));
  const client = connect(path);
  return [await accepted, client];
}

describe('reading requests through NodeTransport and ReadArenas', () => {
  it('reads straight into arenas on a net.Socket and keeps every payload intact', async () => {
    const [s, c] = await socketPair();
    const { sent, bytes } = workload(1, 120);
    const got: ClientFrame[] = [];
    const reader = new Reader(s, { extended: false, maxPayload: 32 << 20, maxDrain: 2 ** 32 });
    expect(reader.mode).toBe('direct');
    const ended = new Promise<Error | undefined>((resolve) => reader.startPush((f) => got.push(f), resolve));
    for (const b of bytes) c.write(b);
    c.end();
    expect(await ended).toBeUndefined();
    check(got, sent);
    // Zero-copy: every payload is a view of an arena the socket read into, never a copy of its own.
    for (const f of got) if (f.kind === 'request' && f.payload) expect(f.payload.buffer.byteLength).toBeGreaterThanOrEqual(ARENA_SIZE);
    s.destroy();
  });

  it('reuses an arena once its payloads are released, and counts unreleased ones as pinned', async () => {
    const [s, c] = await socketPair();
    const held: Uint8Array[] = [];
    const reader = new Reader(s, { extended: false, maxPayload: 32 << 20, maxDrain: 2 ** 32 });
    let frames = 0;
    const ended = new Promise<Error | undefined>((resolve) =>
      reader.startPush((f) => {
        frames++;
        // Hold the first payload (as a slow device would), release the rest at once.
        if (frames === 1) held.push(f.kind === 'request' ? f.payload! : new Uint8Array());
        else if (f.kind === 'request' && f.payload) reader.arenas.release(f.payload);
      }, resolve),
    );
    const payload = new Uint8Array(256 * 1024).fill(5);
    const n = 200; // 50 MiB: a dozen arenas' worth
    for (let i = 0; i < n; i++) {
      c.write(encodeRequest({ flags: 0, type: Command.WRITE, cookie: BigInt(i), offset: 0n, length: BigInt(payload.length) }));
      c.write(payload);
    }
    c.end();
    await ended;
    expect(frames).toBe(n);
    expect(reader.arenas.pinnedBytes).toBe(ARENA_SIZE);
    // The held arena, and one more reused in place for everything else.
    expect(reader.pool.allocated).toBe(2);
    reader.arenas.release(held[0]!);
    expect(reader.arenas.pinnedBytes).toBe(0);
    s.destroy();
  });

  it('pauses and resumes without losing or reordering frames', async () => {
    const [s, c] = await socketPair();
    const { sent, bytes } = workload(2, 60, true);
    const got: ClientFrame[] = [];
    const reader = new Reader(s, { extended: true, maxPayload: 32 << 20, maxDrain: 2 ** 32 });
    const ended = new Promise<Error | undefined>((resolve) =>
      reader.startPush((f) => {
        got.push(f);
        // Pause after every frame; resume a little later (backpressure as Transmission applies it).
        reader.pause();
        setTimeout(() => reader.resume(), 1);
      }, resolve),
    );
    for (const b of bytes) c.write(b);
    c.end();
    await ended;
    check(got, sent);
    s.destroy();
  });

  it('copies chunks of any Duplex in, leftover bytes first', async () => {
    const { sent, bytes } = workload(3, 50);
    const all = Buffer.concat(bytes);
    const d = new PassThrough();
    const got: ClientFrame[] = [];
    const reader = new Reader(d, { extended: false, maxPayload: 32 << 20, maxDrain: 2 ** 32 }, all.subarray(0, 100));
    expect(reader.mode).toBe('copy');
    const ended = new Promise<Error | undefined>((resolve) => reader.startPush((f) => got.push(f), resolve));
    // Odd chunk sizes so headers and payloads straddle chunks.
    for (let off = 100; off < all.length; off += 77_777) d.write(all.subarray(off, off + 77_777));
    d.end();
    d.resume();
    expect(await ended).toBeUndefined();
    check(got, sent);
  });

  it('drains an oversized payload and goes on with the next request', async () => {
    const d = new PassThrough();
    const got: ClientFrame[] = [];
    const reader = new Reader(d, { extended: false, maxPayload: 4096, maxDrain: 2 ** 32 });
    const ended = new Promise<Error | undefined>((resolve) => reader.startPush((f) => got.push(f), resolve));
    const big: Request = { flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 10_000n };
    const next: Request = { flags: 0, type: Command.FLUSH, cookie: 2n, offset: 0n, length: 0n };
    d.write(encodeRequest(big));
    d.write(new Uint8Array(6000));
    d.write(new Uint8Array(4000));
    d.write(encodeRequest(next));
    d.end();
    await ended;
    expect(got).toEqual([
      { kind: 'request', request: big, oversized: true },
      { kind: 'request', request: next },
    ]);
  });

  it('fails the stream on a bad magic, and on a payload too large to drain', async () => {
    for (const [bytes, msg] of [
      [new Uint8Array(28).fill(7), /bad magic/],
      [
        encodeRequest({ flags: CommandFlag.PAYLOAD_LEN, type: Command.WRITE, cookie: 1n, offset: 0n, length: 2n ** 40n }, true),
        /too large/,
      ],
    ] as const) {
      const d = new PassThrough();
      const reader = new Reader(d, { extended: bytes.length === 32, maxPayload: 4096, maxDrain: 2 ** 32 });
      const ended = new Promise<Error | undefined>((resolve) => reader.startPush(() => {}, resolve));
      d.write(bytes);
      expect((await ended)?.message).toMatch(msg);
      expect(d.destroyed).toBe(true);
    }
  });

  it('does not allocate what a header merely claims', async () => {
    const [s, c] = await socketPair();
    const reader = new Reader(s, { extended: false, maxPayload: 1 << 30, maxDrain: 2 ** 32 });
    reader.startPush(
      () => {},
      () => {},
    );
    const before = process.memoryUsage().arrayBuffers;
    c.write(encodeRequest({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: BigInt(1 << 30) }));
    c.write(new Uint8Array(1000));
    await new Promise((r) => setTimeout(r, 50));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
    c.destroy();
    s.destroy();
  });
});
