// Replays a captured NBD conversation (hex of both directions) through @nbd/protocol's
// decoders: every frame must decode, nothing may be left over, and re-encoding every
// decoded message must give back the recorded bytes. Returns the kinds of message seen,
// so tests can ask what really crossed the wire (e.g. "transmission extended").
import {
  ChunkType,
  ClientStreamDecoder,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  decodeChunkPayload,
  decodeOptionReply,
  decodeOptionRequest,
  encodeChunk,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  encodeRequest,
  encodeSimpleReply,
  flagNames,
  nameOf,
  OptionReply,
  ServerStreamDecoder,
} from '@nbd/protocol';
import { expect } from 'vitest';

export interface Connection {
  c2s: string;
  s2c: string;
}
const fromHex = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));
const concat = (parts: Uint8Array[]) => Uint8Array.from(Buffer.concat(parts));

/** Replays one connection through both decoders; returns the kinds of frame seen (for coverage). */
export function replay(conn: Connection): Set<string> {
  const seen = new Set<string>();
  const c2s = fromHex(conn.c2s);
  const s2c = fromHex(conn.s2c);
  const client = new ClientStreamDecoder({ maxPayload: 2 ** 32 });
  const server = new ServerStreamDecoder();
  client.push(c2s);
  server.push(s2c);
  const cOut: Uint8Array[] = [];
  const sOut: Uint8Array[] = [];
  let structured = false;
  let extended = false;

  const greeting = server.next();
  if (greeting?.kind !== 'greeting') throw new Error(`expected a greeting, got ${JSON.stringify(greeting)}`);
  sOut.push(encodeGreeting(greeting.greeting));
  seen.add(`greeting ${greeting.greeting.style}`);

  if (greeting.greeting.style === 'oldstyle') {
    seen.add('transmission simple');
    client.startTransmission(false);
  } else {
    const flags = client.next();
    if (flags?.kind !== 'client-flags') throw new Error('expected client flags');
    cOut.push(encodeClientFlags(flags.flags));
    options: for (;;) {
      const o = client.next();
      if (o === undefined) break; // the client hung up during the handshake
      if (o.kind !== 'option') throw new Error(`expected an option, got ${o.kind}`);
      const req = decodeOptionRequest(o.option, o.data);
      cOut.push(encodeOptionRequest(req));
      seen.add(`option ${req.kind}`);
      if (req.kind === 'export-name') {
        const noZeroes = (flags.flags & 2) !== 0;
        server.expectExportNameReply(noZeroes);
        const r = server.next();
        if (r?.kind !== 'export-name-reply') throw new Error('expected an EXPORT_NAME reply');
        sOut.push(encodeExportNameReply(r, noZeroes));
        seen.add(`export-name reply${noZeroes ? ' no zeroes' : ''}`);
        seen.add(`transmission ${structured ? 'structured' : 'simple'}`);
        client.startTransmission(false);
        break;
      }
      for (;;) {
        const r = server.next();
        if (r === undefined) {
          if (req.kind === 'abort') break options; // a server may close without replying
          throw new Error(`no final reply to ${req.kind}`);
        }
        if (r.kind !== 'option-reply') throw new Error(`expected an option reply, got ${r.kind}`);
        expect(r.option).toBe(o.option);
        const reply = decodeOptionReply(r.type, r.data);
        sOut.push(encodeOptionReply(r.option, reply));
        seen.add(
          `reply ${reply.kind === 'info' ? `info ${reply.info.kind}` : reply.kind === 'error' ? nameOf(OptionReply, reply.code) : reply.kind}`,
        );
        if (reply.kind !== 'ack' && reply.kind !== 'error') continue; // more replies follow
        if (reply.kind === 'ack') {
          if (req.kind === 'structured-reply') structured = true;
          if (req.kind === 'extended-headers') extended = true;
          if (req.kind === 'go') {
            seen.add(`transmission ${extended ? 'extended' : structured ? 'structured' : 'simple'}`);
            client.startTransmission(extended);
            server.startTransmission(extended);
            break options;
          }
        }
        if (req.kind === 'abort') break options;
        break;
      }
    }
  }

  // Cookies may be reused once answered (qemu does), so keep each cookie's requests in order.
  const pending = new Map<bigint, { type: number; length: number }[]>();
  for (let f = client.next(); f !== undefined; f = client.next()) {
    if (f.kind !== 'request') throw new Error(`expected a request, got ${f.kind}`);
    expect(f.oversized).toBeUndefined();
    cOut.push(encodeRequest(f.request, extended));
    if (f.payload) cOut.push(f.payload);
    if (f.request.type !== Command.DISC) {
      const q = pending.get(f.request.cookie) ?? [];
      q.push({ type: f.request.type, length: Number(f.request.length) });
      pending.set(f.request.cookie, q);
    }
    const name = nameOf(Command, f.request.type);
    seen.add(`request ${name}${f.payload ? ' with payload' : ''}`);
    if (f.request.flags !== 0) seen.add(`request ${name} ${flagNames(CommandFlag, f.request.flags).join('+')}`);
    if (f.request.offset >= 2n ** 32n) seen.add(`request ${name} offset ≥ 4 GiB`);
    // A BLOCK_STATUS with PAYLOAD_LEN carries its effect length in the payload.
    const effect =
      f.request.type === Command.BLOCK_STATUS && f.payload ? decodeBlockStatusPayload(f.payload).effectLength : f.request.length;
    if (effect >= 2n ** 32n) seen.add(`request ${name} length ≥ 4 GiB`);
  }
  // Without structured replies a READ's data follows its simple reply, and only the requests say how much.
  server.readLength = (cookie) => {
    const r = pending.get(cookie)?.[0];
    return structured || extended || r?.type !== Command.READ ? undefined : r.length;
  };
  const answered = (cookie: bigint) => pending.get(cookie)?.shift();
  for (let f = server.next(); f !== undefined; f = server.next()) {
    if (f.kind === 'simple-reply') {
      sOut.push(encodeSimpleReply(f));
      if (f.data) sOut.push(f.data);
      seen.add(`simple reply${f.error ? ' error' : ''}${f.data ? ' with data' : ''}`);
      answered(f.cookie);
    } else if (f.kind === 'chunk') {
      expect(f.header.flags & ~1).toBe(0); // only DONE is defined; encodeChunk writes nothing else
      const payload = decodeChunkPayload(f.header.type, f.payload);
      sOut.push(encodeChunk(f.header.cookie, payload, { done: (f.header.flags & 1) !== 0, extended, offset: f.header.offset ?? 0n }));
      seen.add(`chunk ${nameOf(ChunkType, f.header.type)}`);
      if ((f.header.flags & 1) !== 0) answered(f.header.cookie);
    } else {
      throw new Error(`unexpected ${f.kind} in transmission`);
    }
  }
  expect(client.buffered).toBe(0);
  expect(server.buffered).toBe(0);
  expect(Buffer.from(concat(cOut)).toString('hex')).toBe(conn.c2s);
  expect(Buffer.from(concat(sOut)).toString('hex')).toBe(conn.s2c);
  return seen;
}
