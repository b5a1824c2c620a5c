// Property-based round trips (fast-check): whatever a codec encodes, it decodes
// back to the same value; and the stream decoders give the same frames however
// the stream is cut.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { concat } from './bytes.js';
import { type ChunkPayload, decodeChunkHeader, decodeChunkPayload, encodeChunk } from './chunks.js';
import { Command, Size } from './constants.js';
import { type ClientFrame, ClientStreamDecoder, type ServerFrame, ServerStreamDecoder } from './frames.js';
import {
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  type Greeting,
  type InfoReply,
  type OptionReplyMessage,
  type OptionRequest,
} from './handshake.js';
import {
  decodeBlockStatusPayload,
  decodeRequest,
  decodeSimpleReply,
  encodeBlockStatusPayload,
  encodeRequest,
  encodeSimpleReply,
  type Request,
} from './transmission.js';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.nat({ max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const bytes = (minLength = 0) => fc.uint8Array({ minLength, maxLength: 64 });
const runs = { numRuns: 300 };

const compactRequest: fc.Arbitrary<Request> = fc.record({
  flags: u16,
  type: u16,
  cookie: u64,
  offset: u64,
  length: fc.bigInt({ min: 0n, max: 0xffffffffn }),
});
const extendedRequest: fc.Arbitrary<Request> = fc.record({ flags: u16, type: u16, cookie: u64, offset: u64, length: u64 });

describe('transmission codecs', () => {
  test('requests, compact and extended', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          compactRequest.map((r) => [r, false] as const),
          extendedRequest.map((r) => [r, true] as const),
        ),
        ([r, extended]) => {
          const b = encodeRequest(r, extended);
          expect(b.length).toBe(extended ? Size.EXTENDED_REQUEST : Size.REQUEST);
          expect(decodeRequest(b)).toEqual({ ...r, extended });
        },
      ),
      runs,
    );
  });

  test('simple replies', () => {
    fc.assert(
      fc.property(u32, u64, (error, cookie) => {
        expect(decodeSimpleReply(encodeSimpleReply({ error, cookie }))).toEqual({ error, cookie });
      }),
      runs,
    );
  });

  const known = new Set([0, 1, 2, 5, 6, 0x8001, 0x8002]);
  const extent32 = fc.record({ length: fc.bigInt({ min: 0n, max: 0xffffffffn }), flags: u32 });
  const extent64 = fc.record({ length: u64, flags: u32 });
  const payload: fc.Arbitrary<ChunkPayload> = fc.oneof(
    fc.constant({ kind: 'none' as const }),
    fc.record({ kind: fc.constant('offset-data' as const), offset: u64, data: bytes(1) }),
    fc.record({ kind: fc.constant('offset-hole' as const), offset: u64, size: fc.integer({ min: 1, max: 0xffffffff }) }),
    fc.record({ kind: fc.constant('block-status' as const), contextId: u32, extents: fc.array(extent32, { minLength: 1, maxLength: 8 }) }),
    fc.record({
      kind: fc.constant('block-status-ext' as const),
      contextId: u32,
      extents: fc.array(extent64, { minLength: 1, maxLength: 8 }),
    }),
    fc.record({ kind: fc.constant('error' as const), error: u32, message: text }),
    fc.record({ kind: fc.constant('error-offset' as const), error: u32, message: text, offset: u64 }),
    fc.record({ kind: fc.constant('unknown' as const), code: u16.filter((c) => !known.has(c)), data: bytes() }),
  );
  const chunkOpts = fc.record({ done: fc.boolean(), extended: fc.boolean(), offset: u64 });

  test('reply chunks, structured and extended', () => {
    fc.assert(
      fc.property(u64, payload, chunkOpts, (cookie, p, opts) => {
        const b = encodeChunk(cookie, p, opts);
        const size = opts.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
        const h = decodeChunkHeader(b.subarray(0, size));
        expect(h).toMatchObject({ extended: opts.extended, flags: opts.done ? 1 : 0, cookie, length: b.length - size });
        if (opts.extended) expect(h.offset).toBe(opts.offset);
        expect(decodeChunkPayload(h.type, b.subarray(size))).toEqual(p);
      }),
      runs,
    );
  });

  test('extended BLOCK_STATUS payload', () => {
    fc.assert(
      fc.property(u64, fc.array(u32, { maxLength: 16 }), (effectLength, contextIds) => {
        expect(decodeBlockStatusPayload(encodeBlockStatusPayload({ effectLength, contextIds }))).toEqual({ effectLength, contextIds });
      }),
      runs,
    );
  });
});

describe('handshake codecs', () => {
  test('greetings and EXPORT_NAME replies', () => {
    const greeting: fc.Arbitrary<Greeting> = fc.oneof(
      fc.record({ style: fc.constant('oldstyle' as const), size: u64, flags: u32 }),
      fc.record({ style: fc.constant('newstyle' as const), flags: u16 }),
    );
    fc.assert(
      fc.property(greeting, u64, u16, fc.boolean(), (g, size, flags, noZeroes) => {
        expect(decodeGreeting(encodeGreeting(g))).toEqual(g);
        expect(decodeExportNameReply(encodeExportNameReply({ size, flags }, noZeroes))).toEqual({ size, flags });
      }),
      runs,
    );
  });

  const knownOptions = new Set([1, 2, 3, 5, 6, 7, 8, 9, 10, 11]);
  const optionRequest: fc.Arbitrary<OptionRequest> = fc.oneof(
    fc.record({ kind: fc.constant('export-name' as const), name: text }),
    fc.constantFrom<OptionRequest>(
      { kind: 'abort' },
      { kind: 'list' },
      { kind: 'starttls' },
      { kind: 'structured-reply' },
      { kind: 'extended-headers' },
    ),
    fc.record({ kind: fc.constantFrom('info' as const, 'go' as const), name: text, requests: fc.array(u16, { maxLength: 10 }) }),
    fc.record({
      kind: fc.constantFrom('list-meta-context' as const, 'set-meta-context' as const),
      name: text,
      queries: fc.array(text, { maxLength: 6 }),
    }),
    fc.record({ kind: fc.constant('unknown' as const), code: u32.filter((c) => !knownOptions.has(c)), data: bytes() }),
  );

  test('option requests', () => {
    fc.assert(
      fc.property(optionRequest, (req) => {
        const b = encodeOptionRequest(req);
        const v = new DataView(b.buffer, b.byteOffset);
        expect(v.getUint32(12)).toBe(b.length - Size.OPTION_HEADER);
        expect(decodeOptionRequest(v.getUint32(8), b.subarray(Size.OPTION_HEADER))).toEqual(req);
      }),
      runs,
    );
  });

  const info: fc.Arbitrary<InfoReply> = fc.oneof(
    fc.record({ kind: fc.constant('export' as const), size: u64, flags: u16 }),
    fc.record({ kind: fc.constant('name' as const), name: text }),
    fc.record({ kind: fc.constant('description' as const), description: text }),
    fc.record({ kind: fc.constant('block-size' as const), min: u32, preferred: u32, max: u32 }),
    fc.record({ kind: fc.constant('unknown' as const), code: fc.integer({ min: 4, max: 0xffff }), data: bytes() }),
  );
  const optionReply: fc.Arbitrary<OptionReplyMessage> = fc.oneof(
    fc.constant({ kind: 'ack' as const }),
    fc.record({ kind: fc.constant('server' as const), name: text, description: text }),
    fc.record({ kind: fc.constant('info' as const), info }),
    fc.record({ kind: fc.constant('meta-context' as const), id: u32, name: text }),
    fc.record({ kind: fc.constant('error' as const), code: fc.integer({ min: 0x80000000, max: 0xffffffff }), message: text }),
    fc.record({ kind: fc.constant('unknown' as const), code: fc.integer({ min: 5, max: 0x7fffffff }), data: bytes() }),
  );

  test('option replies', () => {
    fc.assert(
      fc.property(u32, optionReply, (option, reply) => {
        const b = encodeOptionReply(option, reply);
        const v = new DataView(b.buffer, b.byteOffset);
        expect(v.getUint32(8)).toBe(option);
        expect(v.getUint32(16)).toBe(b.length - Size.OPTION_REPLY_HEADER);
        expect(decodeOptionReply(v.getUint32(12), b.subarray(Size.OPTION_REPLY_HEADER))).toEqual(reply);
      }),
      runs,
    );
  });
});

/** Cuts `b` at sorted random offsets. */
const cuts = (b: Uint8Array, at: number[]) => {
  const points = [...new Set(at.map((x) => x % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, b.length]) {
    out.push(b.slice(prev, p));
    prev = p;
  }
  return out;
};

describe('stream decoders, random frames cut at random places', () => {
  test('client → server: compact requests with WRITE payloads', () => {
    const req = fc.record({
      type: fc.constantFrom(Command.READ, Command.WRITE, Command.FLUSH, Command.TRIM),
      cookie: u64,
      offset: u64,
      data: bytes(),
    });
    fc.assert(
      fc.property(fc.array(req, { minLength: 1, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 20 }), (reqs, at) => {
        const expected: ClientFrame[] = reqs.map((r) => {
          const request = {
            flags: 0,
            type: r.type,
            cookie: r.cookie,
            offset: r.offset,
            length: BigInt(r.type === Command.WRITE ? r.data.length : 512),
          };
          return r.type === Command.WRITE && r.data.length > 0
            ? { kind: 'request', request, payload: r.data }
            : { kind: 'request', request };
        });
        const stream = concat(
          expected.map((f) =>
            f.kind === 'request' ? concat([encodeRequest(f.request), f.payload ?? new Uint8Array(0)]) : new Uint8Array(0),
          ),
        );
        const d = new ClientStreamDecoder();
        d.startTransmission(false);
        const got: ClientFrame[] = [];
        for (const piece of cuts(stream, at)) {
          d.push(piece);
          for (let f = d.next(); f; f = d.next()) got.push(f);
        }
        expect(got).toEqual(expected);
        expect(d.buffered).toBe(0);
      }),
      { numRuns: 200 },
    );
  });

  test('server → client: chunks and simple replies', () => {
    const frame = fc.oneof(
      fc.record({ cookie: u64, payload: fc.constant(undefined), error: u32 }),
      fc.record({ cookie: u64, payload: fc.constant(undefined), error: fc.constant(0) }),
      fc.record({
        cookie: u64,
        payload: fc.record({ kind: fc.constant('offset-data' as const), offset: u64, data: bytes(1) }),
        error: fc.constant(0),
      }),
    );
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, at) => {
        const parts: Uint8Array[] = [];
        const expected: ServerFrame[] = [];
        for (const f of frames) {
          if (f.payload) {
            const b = encodeChunk(f.cookie, f.payload);
            parts.push(b);
            const { extended: _, ...header } = decodeChunkHeader(b.subarray(0, Size.STRUCTURED_CHUNK));
            expected.push({ kind: 'chunk', header, payload: b.subarray(Size.STRUCTURED_CHUNK) });
          } else {
            parts.push(encodeSimpleReply(f));
            expected.push({ kind: 'simple-reply', error: f.error, cookie: f.cookie });
          }
        }
        const d = new ServerStreamDecoder();
        d.startTransmission(false);
        const got: ServerFrame[] = [];
        for (const piece of cuts(concat(parts), at)) {
          d.push(piece);
          for (let f = d.next(); f; f = d.next()) got.push(f);
        }
        expect(got).toEqual(expected);
        expect(d.buffered).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});
