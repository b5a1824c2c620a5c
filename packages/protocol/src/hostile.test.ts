// Hostile input: truncated frames, bad magics, absurd lengths and counts. Each is
// a ProtocolError (or the documented drain), never a crash, a hang or an allocation
// of what the peer merely claims.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { concat } from './bytes.js';
import { decodeChunkHeader, decodeChunkPayload } from './chunks.js';
import { Command, CommandFlag, Option, Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { exportNameReplies, greetings, optionReplies, optionRequests } from './fixtures/handshake.js';
import { hex } from './fixtures/hex.js';
import { chunks, requests, simpleReplies } from './fixtures/transmission.js';
import { ClientStreamDecoder, ServerStreamDecoder } from './frames.js';
import {
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  encodeGreeting,
} from './handshake.js';
import { decodeBlockStatusPayload, decodeRequest, decodeSimpleReply, encodeRequest } from './transmission.js';

/** Runs `f`; passes if it returns or throws ProtocolError, fails on anything else. */
function protocolErrorOrValue(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
  }
}

function transmission(opts: { extended?: boolean; limits?: ConstructorParameters<typeof ClientStreamDecoder>[0] } = {}) {
  const d = new ClientStreamDecoder(opts.limits);
  d.startTransmission(opts.extended ?? false);
  return d;
}

describe('truncated frames', () => {
  test.each(greetings)('greeting: $name, every prefix', ({ bytes }) => {
    for (let n = 0; n < bytes.length; n++) expect(() => decodeGreeting(bytes.subarray(0, n))).toThrow(ProtocolError);
  });

  test.each(exportNameReplies)('$name, every prefix', ({ bytes }) => {
    for (let n = 0; n < bytes.length; n++) {
      if (n === Size.EXPORT_NAME_REPLY_NO_ZEROES) continue; // the no-zeroes form is a valid frame
      expect(() => decodeExportNameReply(bytes.subarray(0, n))).toThrow(ProtocolError);
    }
  });

  test('client flags, requests, simple replies and chunk headers: every prefix', () => {
    for (let n = 0; n < 4; n++) expect(() => decodeClientFlags(new Uint8Array(n))).toThrow(ProtocolError);
    for (const f of requests) {
      const size = f.value.extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
      for (let n = 0; n < size; n++) expect(() => decodeRequest(f.bytes.subarray(0, n))).toThrow(ProtocolError);
    }
    for (const f of simpleReplies) {
      for (let n = 0; n < Size.SIMPLE_REPLY; n++) expect(() => decodeSimpleReply(f.bytes.subarray(0, n))).toThrow(ProtocolError);
    }
    for (const f of chunks) {
      const size = f.value.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
      for (let n = 0; n < size; n++) expect(() => decodeChunkHeader(f.bytes.subarray(0, n))).toThrow(ProtocolError);
    }
  });

  test('structured option data: every strict prefix is refused', () => {
    const structured: number[] = [Option.INFO, Option.GO, Option.LIST_META_CONTEXT, Option.SET_META_CONTEXT];
    for (const f of optionRequests) {
      const code = new DataView(f.bytes.buffer, f.bytes.byteOffset).getUint32(8);
      if (!structured.includes(code)) continue;
      const data = f.bytes.subarray(Size.OPTION_HEADER);
      for (let n = 0; n < data.length; n++) expect(() => decodeOptionRequest(code, data.subarray(0, n))).toThrow(ProtocolError);
    }
  });

  test('option replies and chunk payloads: every prefix decodes or is a ProtocolError', () => {
    for (const f of optionReplies) {
      const type = new DataView(f.bytes.buffer, f.bytes.byteOffset).getUint32(12);
      const data = f.bytes.subarray(Size.OPTION_REPLY_HEADER);
      for (let n = 0; n < data.length; n++) protocolErrorOrValue(() => decodeOptionReply(type, data.subarray(0, n)));
    }
    for (const f of chunks) {
      const size = f.value.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
      const type = decodeChunkHeader(f.bytes.subarray(0, size)).type;
      const payload = f.bytes.subarray(size);
      for (let n = 0; n < payload.length; n++) protocolErrorOrValue(() => decodeChunkPayload(type, payload.subarray(0, n)));
    }
  });

  test('stream decoders wait on a truncated frame and keep only what arrived', () => {
    const c = transmission();
    c.push(requests[0]!.bytes.subarray(0, 27));
    expect(c.next()).toBeUndefined();
    expect(c.buffered).toBe(27);
    const s = new ServerStreamDecoder();
    s.push(greetings[0]!.bytes.subarray(0, 151));
    expect(s.next()).toBeUndefined();
    expect(s.buffered).toBe(151);
  });
});

describe('bad magics', () => {
  test('greeting: not NBDMAGIC, and an unknown style', () => {
    const bad = encodeGreeting({ style: 'newstyle', flags: 1 });
    bad[0] = 0x4f;
    expect(() => decodeGreeting(bad)).toThrow(/bad magic/);
    const s = new ServerStreamDecoder();
    s.push(bad);
    expect(() => s.next()).toThrow(ProtocolError);
    const style = encodeGreeting({ style: 'newstyle', flags: 1 });
    style[15] = 0;
    expect(() => decodeGreeting(style)).toThrow(/style magic/);
    const s2 = new ServerStreamDecoder();
    s2.push(style.subarray(0, 16)); // known to be bad before the rest arrives
    expect(() => s2.next()).toThrow(/style magic/);
  });

  test('option request without IHAVEOPT', () => {
    const d = new ClientStreamDecoder();
    d.startOptions();
    d.push(hex`4948415645000000 00000001 00000000  # "IHAVE" then garbage`);
    expect(() => d.next()).toThrow(/IHAVEOPT/);
  });

  test('option reply with a wrong magic', () => {
    const d = new ServerStreamDecoder();
    d.startOptions();
    d.push(hex`0003e889045565aa 00000007 00000001 00000000  # magic off by one`);
    expect(() => d.next()).toThrow(/bad magic/);
  });

  test('requests with the reserved old magic, or a reply magic', () => {
    for (const magic of [0x12560953, 0x67446698, 0x25609514]) {
      const d = transmission();
      const b = encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0n, length: 1n });
      new DataView(b.buffer).setUint32(0, magic);
      d.push(b);
      expect(() => d.next()).toThrow(/bad magic/);
    }
  });

  test('replies with the reserved old magic, or a request magic', () => {
    for (const magic of [0x96744668, 0x25609513, 0]) {
      const d = new ServerStreamDecoder();
      d.startTransmission(false);
      const b = new Uint8Array(32);
      new DataView(b.buffer).setUint32(0, magic);
      d.push(b);
      expect(() => d.next()).toThrow(/magic/);
    }
  });
});

describe('absurd lengths and counts', () => {
  test('option length 2^32-1 is refused from the header alone', () => {
    const d = new ClientStreamDecoder();
    d.startOptions();
    d.push(hex`
      49484156454f5054  # IHAVEOPT
      00000001          # EXPORT_NAME
      ffffffff          # length: 4 GiB - 1, never allocated
    `);
    expect(() => d.next()).toThrow(/exceeds the limit/);
  });

  test('option data over maxOptionLength is refused before it arrives', () => {
    const d = new ClientStreamDecoder({ maxOptionLength: 100 });
    d.startOptions();
    d.push(hex`49484156454f5054 00000006 00000065  # INFO, length 101`);
    expect(() => d.next()).toThrow(ProtocolError);
  });

  test('option reply length 2^32-1 is refused from the header alone', () => {
    const d = new ServerStreamDecoder();
    d.startOptions();
    d.push(hex`0003e889045565a9 00000003 00000002 ffffffff  # SERVER reply claiming 4 GiB`);
    expect(() => d.next()).toThrow(/exceeds the limit/);
  });

  test('strings over 4096 bytes', () => {
    const big = new Uint8Array(4097).fill(0x61);
    expect(() => decodeOptionRequest(Option.EXPORT_NAME, big)).toThrow(/4096/);
    expect(decodeOptionRequest(Option.EXPORT_NAME, big.subarray(0, 4096))).toEqual({ kind: 'export-name', name: 'a'.repeat(4096) });
    const info = concat([hex`00001001  # name length 4097`, big, hex`0000  # no requests`]);
    expect(() => decodeOptionRequest(Option.INFO, info)).toThrow(/4096/);
    const meta = concat([hex`00000000 00000001 00001001  # no name, one query of 4097 bytes`, big]);
    expect(() => decodeOptionRequest(Option.SET_META_CONTEXT, meta)).toThrow(/4096/);
    expect(() => decodeOptionReply(2, concat([hex`00001001`, big]))).toThrow(/4096/); // SERVER name
    expect(() => decodeOptionReply(2, concat([hex`00000000`, big]))).toThrow(/4096/); // SERVER description
    expect(() => decodeOptionReply(3, concat([hex`0001`, big]))).toThrow(/4096/); // INFO NAME
    expect(() => decodeOptionReply(4, concat([hex`00000001`, big]))).toThrow(/4096/); // META_CONTEXT name
  });

  test('an error reply message over 4096 bytes is cut, not fatal (documented)', () => {
    const r = decodeOptionReply(0x80000001, new Uint8Array(5000).fill(0x62));
    expect(r).toEqual({ kind: 'error', code: 0x80000001, message: 'b'.repeat(4096) });
  });

  test('name length 2^32-1 or beyond the data', () => {
    expect(() => decodeOptionRequest(Option.GO, hex`ffffffff 0000`)).toThrow(ProtocolError);
    expect(() => decodeOptionRequest(Option.INFO, hex`00000005 "disk" 0000  # name length 5, 4 bytes of name`)).toThrow(
      /truncated|trailing/,
    );
    expect(() => decodeOptionRequest(Option.LIST_META_CONTEXT, hex`00000100 "disk"`)).toThrow(ProtocolError);
    expect(() => decodeOptionReply(2, hex`ffffffff "x"`)).toThrow(ProtocolError);
  });

  test('info request count larger than the data', () => {
    expect(() => decodeOptionRequest(Option.GO, hex`00000000 ffff 0001`)).toThrow(/truncated/);
  });

  test('meta-context query count 2^32-1 fails at once, without looping', () => {
    const t0 = performance.now();
    expect(() => decodeOptionRequest(Option.LIST_META_CONTEXT, hex`00000000 ffffffff 00000001 "x"`)).toThrow(/truncated/);
    expect(() => decodeOptionRequest(Option.SET_META_CONTEXT, hex`00000000 ffffffff`)).toThrow(/truncated/);
    expect(performance.now() - t0).toBeLessThan(50);
  });

  test('query length 2^32-1', () => {
    expect(() => decodeOptionRequest(Option.SET_META_CONTEXT, hex`00000000 00000001 ffffffff "base:"`)).toThrow(ProtocolError);
  });

  test('structured chunk length 2^32-1 is refused from the header alone', () => {
    const d = new ServerStreamDecoder();
    d.startTransmission(false);
    d.push(hex`668e33ef 0001 0001 0000000000000001 ffffffff  # OFFSET_DATA claiming 4 GiB`);
    expect(() => d.next()).toThrow(/exceeds the limit/);
  });

  test('extended chunk length 2^64-1 is refused', () => {
    const header = hex`6e8a278c 0001 0001 0000000000000001 0000000000000000 ffffffffffffffff`;
    expect(() => decodeChunkHeader(header)).toThrow(ProtocolError);
    const d = new ServerStreamDecoder();
    d.startTransmission(true);
    d.push(header);
    expect(() => d.next()).toThrow(ProtocolError);
  });

  test('BLOCK_STATUS_EXT count 2^32-1 and ERROR message length 65535', () => {
    expect(() => decodeChunkPayload(6, hex`00000001 ffffffff 0000000000001000 0000000000000000`)).toThrow(ProtocolError);
    expect(() => decodeChunkPayload(0x8001, hex`00000005 ffff "short"`)).toThrow(/truncated/);
    expect(() => decodeChunkPayload(0x8002, hex`00000005 ffff`)).toThrow(/truncated/);
  });

  test('a BLOCK_STATUS payload of odd length', () => {
    expect(() => decodeBlockStatusPayload(new Uint8Array(9))).toThrow(ProtocolError);
  });
});

describe('WRITE claiming 4 GiB is drained, not buffered', () => {
  test('compact WRITE of 2^32-1 bytes: buffered stays 0 while 4 GiB stream by, then the next request decodes', () => {
    const d = transmission();
    const write = { flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 0xffffffffn };
    d.push(encodeRequest(write));
    expect(d.next()).toEqual({ kind: 'request', request: write, oversized: true });
    const mib = new Uint8Array(1 << 20); // one buffer pushed 4096 times: the test itself allocates 1 MiB
    let left = 0xffffffff;
    while (left > 0) {
      const n = Math.min(left, mib.length);
      d.push(n === mib.length ? mib : mib.subarray(0, n));
      expect(d.next()).toBeUndefined();
      if (d.buffered !== 0) throw new Error(`buffered ${d.buffered} bytes of a drained payload`);
      left -= n;
    }
    const read = { flags: 0, type: Command.READ, cookie: 2n, offset: 0n, length: 1n };
    d.push(encodeRequest(read));
    expect(d.next()).toEqual({ kind: 'request', request: read });
    expect(d.midFrame).toBe(false);
  });

  test('extended WRITE with PAYLOAD_LEN claiming 2^64-1 is a ProtocolError (beyond maxDrain)', () => {
    const d = transmission({ extended: true });
    d.push(
      encodeRequest({ flags: CommandFlag.PAYLOAD_LEN, type: Command.WRITE, cookie: 1n, offset: 0n, length: 0xffffffffffffffffn }, true),
    );
    expect(() => d.next()).toThrow(/too large to drain/);
  });

  test('maxDrain is honoured', () => {
    const d = transmission({ limits: { maxPayload: 10, maxDrain: 100 } });
    d.push(encodeRequest({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 101n }));
    expect(() => d.next()).toThrow(ProtocolError);
  });
});

describe('random bytes never crash the decoders', () => {
  const bytes = fc.uint8Array({ maxLength: 200 });

  test('codecs', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 0xffff }), bytes, (opt, type, b) => {
        protocolErrorOrValue(() => decodeGreeting(b));
        protocolErrorOrValue(() => decodeClientFlags(b));
        protocolErrorOrValue(() => decodeOptionRequest(opt, b));
        protocolErrorOrValue(() => decodeOptionReply(opt, b));
        protocolErrorOrValue(() => decodeOptionReply((0x80000000 | opt) >>> 0, b));
        protocolErrorOrValue(() => decodeExportNameReply(b));
        protocolErrorOrValue(() => decodeRequest(b));
        protocolErrorOrValue(() => decodeSimpleReply(b));
        protocolErrorOrValue(() => decodeChunkHeader(b));
        protocolErrorOrValue(() => decodeChunkPayload(type, b));
        protocolErrorOrValue(() => decodeChunkPayload(type & 7, b));
        protocolErrorOrValue(() => decodeBlockStatusPayload(b));
      }),
      { numRuns: 500 },
    );
  });

  test('stream decoders in every phase, behind a valid prefix so magics match', () => {
    const prefixes = [
      new Uint8Array(0),
      hex`49484156454f5054`,
      hex`0003e889045565a9`,
      hex`25609513`,
      hex`21e41c71`,
      hex`67446698`,
      hex`668e33ef`,
      hex`6e8a278c`,
      hex`4e42444d41474943`,
    ];
    fc.assert(
      fc.property(fc.constantFrom(...prefixes), bytes, fc.boolean(), fc.integer({ min: 0, max: 3 }), (prefix, b, extended, phase) => {
        const input = concat([prefix, b]);
        const c = new ClientStreamDecoder({ maxPayload: 64 });
        if (phase === 1) c.startOptions();
        if (phase >= 2) c.startTransmission(extended);
        const s = new ServerStreamDecoder({ maxOptionReply: 64, maxChunk: 64 });
        if (phase === 1) s.startOptions();
        if (phase === 2) s.expectExportNameReply(extended);
        if (phase === 3) s.startTransmission(extended);
        s.readLength = (cookie) => Number(cookie & 0xffn);
        for (const d of [c, s]) {
          d.push(input);
          protocolErrorOrValue(() => {
            for (let i = 0; i < 1000; i++) if (d.next() === undefined) return;
            throw new Error('decoder did not stop');
          });
        }
      }),
      { numRuns: 1000 },
    );
  });
});
