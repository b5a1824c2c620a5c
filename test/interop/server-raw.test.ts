// Raw-socket conversations with our server through the protocol codecs:
// option edge cases, extended headers (no Debian peer speaks them), and
// hostile clients. After each hostile client the process is alive and others
// are still served.

import {
  ChunkType,
  ClientFlag,
  Command,
  CommandFlag,
  decodeChunkPayload,
  decodeOptionReply,
  Errno,
  encodeBlockStatusPayload,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  Info,
  Magic,
  Option,
  OptionReply,
  ReplyFlag,
  type ServerFrame,
  TransmissionFlag,
} from '@nbd/protocol';
import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runOk } from '../support/peers.js';
import { MiB, type OurServer, RawClient, startOurServer } from './server-support.js';

const SIZE = 8 * MiB;
let srv: OurServer;
let slowSrv: OurServer;

beforeAll(async () => {
  const mem = new MemoryDevice(SIZE);
  mem.writeAt(new Uint8Array(65536).fill(0x5a), 65536);
  srv = await startOurServer([{ name: 'm', description: 'mem', size: SIZE, device: mem }], { handshakeTimeout: 500 });
  slowSrv = await startOurServer([{ name: '', size: 256 * MiB, device: new MemoryDevice(256 * MiB) }], {
    maxInFlight: 16,
    maxInFlightBytes: 4 * MiB,
  });
});
afterAll(async () => {
  await srv?.stop();
  await slowSrv?.stop();
});

/** Greeting + client flags; returns the client in option phase. */
async function start(path = srv.socket, flags = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES): Promise<RawClient> {
  const c = await RawClient.connect(path);
  const g = await c.frame();
  expect(g?.kind).toBe('greeting');
  c.write(encodeClientFlags(flags));
  return c;
}

async function option(c: RawClient, req: Parameters<typeof encodeOptionRequest>[0]): Promise<ServerFrame[]> {
  c.write(encodeOptionRequest(req));
  return replies(c);
}

/** Option replies up to and including the final one (ACK or error). */
async function replies(c: RawClient): Promise<ServerFrame[]> {
  const out: ServerFrame[] = [];
  for (;;) {
    const f = await c.frame();
    if (f === null) throw new Error('server closed during option');
    out.push(f);
    if (f.kind === 'option-reply' && (f.type === OptionReply.ACK || (f.type & 0x80000000) !== 0)) return out;
  }
}

const lastType = (rs: ServerFrame[]) => (rs[rs.length - 1] as { type: number }).type >>> 0;

async function stillServes(): Promise<void> {
  const out = await runOk('nbdinfo', ['--size', srv.uri('m')]);
  expect(out.trim()).toBe(String(SIZE));
}

describe('option negotiation edge cases', () => {
  it('unknown options get ERR_UNSUP and parsing goes on; STARTTLS is refused (ERR_POLICY: a server without TLS is NOTLS)', async () => {
    const c = await start();
    expect(lastType(await option(c, { kind: 'unknown', code: 99, data: new Uint8Array([1, 2, 3]) }))).toBe(OptionReply.ERR_UNSUP);
    expect(lastType(await option(c, { kind: 'starttls' }))).toBe(OptionReply.ERR_POLICY);
    // LIST with data is invalid.
    expect(lastType(await option(c, { kind: 'unknown', code: Option.LIST, data: new Uint8Array(4) }))).toBe(OptionReply.ERR_INVALID);
    // Malformed INFO (name length beyond the data).
    expect(lastType(await option(c, { kind: 'unknown', code: Option.INFO, data: new Uint8Array([0, 0, 0, 9, 0]) }))).toBe(
      OptionReply.ERR_INVALID,
    );
    expect(lastType(await option(c, { kind: 'info', name: 'nope', requests: [] }))).toBe(OptionReply.ERR_UNKNOWN);
    // Meta contexts need structured replies first.
    expect(lastType(await option(c, { kind: 'set-meta-context', name: 'm', queries: ['base:allocation'] }))).toBe(OptionReply.ERR_INVALID);
    const list = await option(c, { kind: 'list' });
    expect(list.map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : f))).toEqual([
      { kind: 'server', name: 'm', description: 'mem' },
      { kind: 'ack' },
    ]);
    const abort = await option(c, { kind: 'abort' });
    expect(lastType(abort)).toBe(OptionReply.ACK);
    expect(await c.waitClosed()).toBe(true);
  });

  it('INFO reports EXPORT, NAME, DESCRIPTION and BLOCK_SIZE; GO with the empty name selects the default', async () => {
    const c = await start();
    const rs = await option(c, { kind: 'info', name: '', requests: [Info.NAME, Info.DESCRIPTION] });
    const infos = rs.map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : f));
    expect(infos).toContainEqual({ kind: 'info', info: { kind: 'name', name: 'm' } });
    expect(infos).toContainEqual({ kind: 'info', info: { kind: 'description', description: 'mem' } });
    expect(infos).toContainEqual({ kind: 'info', info: { kind: 'block-size', min: 1, preferred: 4096, max: 32 * MiB } });
    const exp = infos.find((i) => i.kind === 'info' && i.info.kind === 'export') as { info: { size: bigint; flags: number } };
    expect(exp.info.size).toBe(BigInt(SIZE));
    expect(exp.info.flags & TransmissionFlag.SEND_DF).toBe(0); // no structured replies yet
    c.close();
  });

  it('unknown client flags, a non-fixed client sending options, and EXPORT_NAME of an unknown export all close', async () => {
    const a = await start(srv.socket, 0x80);
    expect(await a.waitClosed()).toBe(true);
    const b = await start(srv.socket, 0);
    b.write(encodeOptionRequest({ kind: 'list' }));
    expect(await b.waitClosed()).toBe(true);
    const d = await start();
    d.write(encodeOptionRequest({ kind: 'export-name', name: 'nope' }));
    expect(await d.waitClosed()).toBe(true);
    await stillServes();
  });

  it('a plain-newstyle client gets the 134-byte EXPORT_NAME reply and simple replies', async () => {
    const c = await start(srv.socket, 0);
    c.write(encodeOptionRequest({ kind: 'export-name', name: 'm' }));
    c.decoder.expectExportNameReply(false);
    const r = await c.frame();
    expect(r).toMatchObject({ kind: 'export-name-reply', size: BigInt(SIZE) });
    c.decoder.readLength = () => 4;
    c.write(encodeRequest({ type: Command.READ, flags: 0, cookie: 7n, offset: 65536n, length: 4n }));
    const rep = await c.frame();
    expect(rep).toMatchObject({ kind: 'simple-reply', error: 0, cookie: 7n });
    expect([...(rep as { data: Uint8Array }).data]).toEqual([0x5a, 0x5a, 0x5a, 0x5a]);
    c.write(encodeRequest({ type: Command.DISC, flags: 0, cookie: 8n, offset: 0n, length: 0n }));
    expect(await c.waitClosed()).toBe(true);
  });
});

describe('extended headers (raw socket)', () => {
  async function goExtended(): Promise<{ c: RawClient; flags: number }> {
    const c = await start();
    expect(lastType(await option(c, { kind: 'extended-headers' }))).toBe(OptionReply.ACK);
    // Again: already negotiated.
    expect(lastType(await option(c, { kind: 'extended-headers' }))).toBe(OptionReply.ERR_INVALID);
    const meta = await option(c, { kind: 'set-meta-context', name: 'm', queries: ['base:allocation', 'qemu:nope'] });
    const ctx = meta.map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : f));
    expect(ctx).toEqual([{ kind: 'meta-context', id: 1, name: 'base:allocation' }, { kind: 'ack' }]);
    const go = await option(c, { kind: 'go', name: 'm', requests: [Info.BLOCK_SIZE] });
    expect(lastType(go)).toBe(OptionReply.ACK);
    const exp = go
      .map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : f))
      .find((i) => i.kind === 'info' && i.info.kind === 'export') as { info: { flags: number } };
    c.decoder.startTransmission(true);
    return { c, flags: exp.info.flags };
  }

  it('EXPORT_NAME after EXTENDED_HEADERS closes the connection', async () => {
    const c = await start();
    expect(lastType(await option(c, { kind: 'extended-headers' }))).toBe(OptionReply.ACK);
    c.write(encodeOptionRequest({ kind: 'export-name', name: 'm' }));
    expect(await c.waitClosed()).toBe(true);
  });

  it('every reply is an extended chunk: write, read, zero, block status (plain and with payload), errors', async () => {
    const { c, flags } = await goExtended();
    expect(flags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).not.toBe(0);
    const send = (type: number, cookie: bigint, offset: bigint, length: bigint, flag = 0, payload?: Uint8Array) => {
      c.write(encodeRequest({ type, flags: flag, cookie, offset, length }, true));
      if (payload) c.write(payload);
    };
    // WRITE with PAYLOAD_LEN.
    send(Command.WRITE, 1n, 4096n, 8n, CommandFlag.PAYLOAD_LEN | CommandFlag.FUA, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    let f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(f.header).toMatchObject({ type: ChunkType.NONE, flags: ReplyFlag.DONE, cookie: 1n, offset: 4096n, length: 0 });
    // READ: one OFFSET_DATA chunk.
    send(Command.READ, 2n, 4094n, 12n);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(f.header).toMatchObject({ type: ChunkType.OFFSET_DATA, flags: ReplyFlag.DONE, cookie: 2n, offset: 4094n });
    const d = decodeChunkPayload(f.header.type, f.payload) as { offset: bigint; data: Uint8Array };
    expect(d.offset).toBe(4094n);
    expect([...d.data]).toEqual([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);
    // A large sparse READ: hole and data chunks, DONE on the last.
    send(Command.READ, 3n, 0n, 4n * 65536n);
    const kinds: string[] = [];
    for (;;) {
      const ch = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
      const p = decodeChunkPayload(ch.header.type, ch.payload);
      kinds.push(
        p.kind === 'offset-hole' ? `hole@${p.offset}+${p.size}` : p.kind === 'offset-data' ? `data@${p.offset}+${p.data.length}` : p.kind,
      );
      if (ch.header.flags & ReplyFlag.DONE) break;
    }
    expect(kinds).toEqual(['data@0+32768', 'hole@32768+32768', 'data@65536+65536', 'hole@131072+131072']);
    // BLOCK_STATUS: BLOCK_STATUS_EXT chunk with 64-bit extents, clipped to the request.
    send(Command.BLOCK_STATUS, 4n, 0n, 200000n);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(f.header.type).toBe(ChunkType.BLOCK_STATUS_EXT);
    const bs = decodeChunkPayload(f.header.type, f.payload) as { contextId: number; extents: { length: bigint; flags: number }[] };
    expect(bs.contextId).toBe(1);
    expect(bs.extents).toEqual([
      { length: 32768n, flags: 0 },
      { length: 32768n, flags: 3 },
      { length: 65536n, flags: 0 },
      { length: 200000n - 131072n, flags: 3 },
    ]);
    // BLOCK_STATUS with a payload (effect length 65536, context 1) and REQ_ONE.
    const bp = encodeBlockStatusPayload({ effectLength: 65536n, contextIds: [1] });
    send(Command.BLOCK_STATUS, 5n, 32768n, BigInt(bp.length), CommandFlag.PAYLOAD_LEN | CommandFlag.REQ_ONE, bp);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    const one = decodeChunkPayload(f.header.type, f.payload) as { extents: { length: bigint; flags: number }[] };
    expect(one.extents).toEqual([{ length: 32768n, flags: 3 }]);
    // An unknown context in the payload is EINVAL.
    const bad = encodeBlockStatusPayload({ effectLength: 4096n, contextIds: [9] });
    send(Command.BLOCK_STATUS, 6n, 0n, BigInt(bad.length), CommandFlag.PAYLOAD_LEN, bad);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(f.header.type).toBe(ChunkType.ERROR);
    expect(decodeChunkPayload(f.header.type, f.payload)).toMatchObject({ error: Errno.EINVAL });
    // A 64-bit WRITE_ZEROES range past the end: ENOSPC as an extended ERROR chunk.
    send(Command.WRITE_ZEROES, 7n, 0n, 1n << 40n);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(decodeChunkPayload(f.header.type, f.payload)).toMatchObject({ kind: 'error', error: Errno.ENOSPC });
    // WRITE without PAYLOAD_LEN is EINVAL (and carries no payload by the framing rules).
    send(Command.WRITE, 8n, 0n, 0n);
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(decodeChunkPayload(f.header.type, f.payload)).toMatchObject({ kind: 'error', error: Errno.EINVAL });
    // A whole-export extended TRIM works in one request.
    send(Command.TRIM, 9n, 0n, BigInt(SIZE));
    f = (await c.frame()) as Extract<ServerFrame, { kind: 'chunk' }>;
    expect(f.header).toMatchObject({ type: ChunkType.NONE, cookie: 9n });
    send(Command.DISC, 10n, 0n, 0n);
    expect(await c.waitClosed()).toBe(true);
  });
});

describe('hostile clients', () => {
  it('garbage magic: closed', async () => {
    const c = await RawClient.connect(srv.socket);
    await c.frame();
    c.write(encodeClientFlags(ClientFlag.FIXED_NEWSTYLE));
    c.write(new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await c.waitClosed()).toBe(true);
    await stillServes();
  });

  it('an option claiming 4 GiB of data: closed without allocating it', async () => {
    const c = await start();
    const h = new DataView(new ArrayBuffer(16));
    h.setBigUint64(0, Magic.IHAVEOPT);
    h.setUint32(8, Option.GO);
    h.setUint32(12, 0xffffffff);
    c.write(new Uint8Array(h.buffer));
    expect(await c.waitClosed()).toBe(true);
    await stillServes();
  });

  it('a WRITE claiming 4 GiB - 1: drained and answered EINVAL (not EOVERFLOW: it carries a payload), the stream stays in sync', async () => {
    const c = await start();
    await option(c, { kind: 'structured-reply' });
    expect(lastType(await option(c, { kind: 'go', name: 'm', requests: [] }))).toBe(OptionReply.ACK);
    c.decoder.startTransmission(false);
    c.write(encodeRequest({ type: Command.WRITE, flags: 0, cookie: 1n, offset: 0n, length: 0xffffffffn }));
    // Send only a little of the payload, then the server must still be alive; then close.
    c.write(new Uint8Array(1024 * 1024));
    const f = await c.frame();
    expect(f).toMatchObject({ kind: 'simple-reply', error: Errno.EINVAL, cookie: 1n });
    c.close();
    await stillServes();
  });

  it('requests after DISC are not answered; in-flight ones are', async () => {
    const c = await start();
    await option(c, { kind: 'structured-reply' });
    await option(c, { kind: 'go', name: 'm', requests: [] });
    c.decoder.startTransmission(false);
    const reqs = [
      encodeRequest({ type: Command.READ, flags: 0, cookie: 1n, offset: 0n, length: 512n }),
      encodeRequest({ type: Command.DISC, flags: 0, cookie: 2n, offset: 0n, length: 0n }),
      encodeRequest({ type: Command.READ, flags: 0, cookie: 3n, offset: 0n, length: 512n }),
    ];
    c.write(Buffer.concat(reqs));
    const f = await c.frame();
    expect(f).toMatchObject({ kind: 'chunk', header: { cookie: 1n } });
    expect(await c.frame()).toBeNull();
  });

  it('a client that connects and sends nothing is closed after handshakeTimeout', async () => {
    const c = await RawClient.connect(srv.socket);
    const t0 = Date.now();
    expect(await c.waitClosed(5000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    await stillServes();
  });

  it('a client that never reads replies: memory stays bounded, others are served', async () => {
    const c = await start(slowSrv.socket);
    await option(c, { kind: 'structured-reply' });
    await option(c, { kind: 'go', name: '', requests: [] });
    c.sock.pause(); // never read a reply
    const before = process.memoryUsage();
    // 4096 × 1 MiB READs = 4 GiB of replies requested.
    const req = Buffer.concat(
      Array.from({ length: 64 }, (_, i) =>
        encodeRequest({ type: Command.READ, flags: 0, cookie: BigInt(i), offset: 0n, length: 1n << 20n }),
      ),
    );
    for (let i = 0; i < 64; i++) c.sock.write(req);
    await new Promise((r) => setTimeout(r, 1500));
    const after = process.memoryUsage();
    const grown = after.arrayBuffers + after.external - (before.arrayBuffers + before.external);
    // Bounded by the caps (4 MiB in flight + a reply high-water mark + socket buffers), far below 4 GiB.
    expect(grown).toBeLessThan(96 * MiB);
    // Other clients are still served meanwhile.
    expect((await runOk('nbdinfo', ['--size', slowSrv.uri()])).trim()).toBe(String(256 * MiB));
    c.close();
  });
});
