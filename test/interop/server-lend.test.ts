// Zero-copy READ replies (Device.lend) through the whole server: a reply still
// queued behind a client that is not reading must keep the bytes it was lent,
// even when those pages are trimmed and their memory is wanted for other data.

import {
  ChunkType,
  ClientFlag,
  Command,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  OptionReply,
  type ServerFrame,
} from '@nbd/protocol';
import { MemoryDevice } from '@nbd/server';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB, type OurServer, RawClient, startOurServer } from './server-support.js';

let srv: OurServer | undefined;
afterEach(async () => {
  await srv?.stop();
  srv = undefined;
});

async function negotiate(path: string): Promise<RawClient> {
  const c = await RawClient.connect(path);
  expect((await c.frame())?.kind).toBe('greeting');
  c.write(encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES));
  for (const req of [{ kind: 'structured-reply' as const }, { kind: 'go' as const, name: '', requests: [] }]) {
    c.write(encodeOptionRequest(req));
    for (;;) {
      const f = await c.frame();
      if (f?.kind !== 'option-reply') throw new Error(`unexpected ${f?.kind}`);
      if (f.type === OptionReply.ACK) break;
      if ((f.type & 0x80000000) !== 0) throw new Error(`option refused: ${f.type}`);
    }
  }
  c.decoder.startTransmission(false);
  return c;
}

/** The data of one READ's OFFSET_DATA chunks, in offset order. */
async function readReply(c: RawClient, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const f: ServerFrame | null = await c.frame(10_000);
    if (f?.kind !== 'chunk' || f.header.type !== ChunkType.OFFSET_DATA) throw new Error(`unexpected reply ${JSON.stringify(f?.kind)}`);
    const off = Number(new DataView(f.payload.buffer, f.payload.byteOffset).getBigUint64(0));
    out.set(f.payload.subarray(8), off - offset);
    got += f.payload.length - 8;
  }
  return out;
}

describe('zero-copy READ replies', () => {
  it('a queued reply keeps its data while the lent pages are trimmed and memory is reused', async () => {
    const size = 64 * MiB;
    const mem = new MemoryDevice(size);
    const old = Buffer.alloc(4 * MiB);
    for (let i = 0; i < old.length; i++) old[i] = (i * 31 + (i >> 12)) & 0xff;
    mem.writeAt(old, 0);
    srv = await startOurServer([{ name: '', size, device: mem }]);
    const c = await negotiate(srv.socket);
    c.sock.pause(); // the 4 MiB reply cannot fit in the socket buffers: most of it waits, lent
    c.write(encodeRequest({ type: Command.READ, flags: 0, cookie: 1n, offset: 0n, length: BigInt(old.length) }));
    await new Promise((r) => setTimeout(r, 300));
    // Meanwhile the pages are dropped and other data is written: it must not land in the lent memory.
    mem.trim(0, old.length);
    mem.writeAt(Buffer.alloc(8 * MiB, 0xee), 16 * MiB);
    c.sock.resume();
    const back = await readReply(c, 0, old.length);
    expect(back.equals(old)).toBe(true);
    c.close();
  });

  it('READs of every size and alignment return what was written, pipelined', async () => {
    const size = 64 * MiB;
    const mem = new MemoryDevice(size);
    const data = Buffer.alloc(8 * MiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 15)) & 0xff;
    mem.writeAt(data, MiB);
    srv = await startOurServer([{ name: '', size, device: mem }]);
    const c = await negotiate(srv.socket);
    const reads = [
      [MiB, 1],
      [MiB + 4095, 4097],
      [MiB - 100, 200], // across the start of the data (hole → data)
      [2 * MiB + 12_345, 300_000],
      [MiB, 8 * MiB],
      [9 * MiB - 10, 20], // across the end
    ] as const;
    reads.forEach(([off, len], i) =>
      c.write(encodeRequest({ type: Command.READ, flags: 0, cookie: BigInt(i), offset: BigInt(off), length: BigInt(len) })),
    );
    const all = Buffer.alloc(size);
    data.copy(all, MiB);
    // Replies come in completion order; with one in-process device that is request order.
    for (const [off, len] of reads) {
      const got = await readReply(c, off, len);
      expect(got.equals(all.subarray(off, off + len))).toBe(true);
    }
    c.close();
  });
});
