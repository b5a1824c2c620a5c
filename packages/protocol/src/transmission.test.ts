// Every transmission fixture: decode, encode, and round trip.
import { describe, expect, test } from 'vitest';
import {
  chunkTypeOf,
  decodeChunkHeader,
  decodeChunkPayload,
  encodeChunk,
  encodeChunkPayload,
  readErrorChunkHead,
  readOffsetData,
  writeChunkHeader,
} from './chunks.js';
import { Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { blockStatusPayloads, chunks, requests, simpleReplies } from './fixtures/transmission.js';
import {
  decodeBlockStatusPayload,
  decodeRequest,
  decodeSimpleReply,
  encodeBlockStatusPayload,
  encodeRequest,
  encodeSimpleReply,
  writeRequest,
  writeSimpleReply,
} from './transmission.js';

const cat = (a: Uint8Array, b: Uint8Array = new Uint8Array(0)) => {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
};

describe('requests', () => {
  test.each(requests)('$name', ({ value, bytes }) => {
    const size = value.extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
    const header = bytes.subarray(0, size);
    expect(bytes.subarray(size)).toEqual(value.payload ?? new Uint8Array(0));
    expect(decodeRequest(header)).toEqual({ ...value.request, extended: value.extended });
    expect(cat(encodeRequest(value.request, value.extended), value.payload)).toEqual(bytes);
    // writeRequest places the header anywhere in a bigger buffer
    const buf = new Uint8Array(size + 3);
    expect(writeRequest(buf, 3, value.request, value.extended)).toBe(size);
    expect(buf.subarray(3)).toEqual(header);
    const { extended, ...again } = decodeRequest(encodeRequest(value.request, value.extended));
    expect(again).toEqual(value.request);
    expect(extended).toBe(value.extended);
  });

  test('a compact request cannot carry a length over 32 bits', () => {
    expect(() => encodeRequest({ flags: 0, type: 4, cookie: 0n, offset: 0n, length: 0x100000000n })).toThrow(RangeError);
  });

  test('bad magic and wrong sizes are refused', () => {
    const good = requests[0]!.bytes;
    const bad = good.slice();
    bad[0] = 0;
    expect(() => decodeRequest(bad)).toThrow(/bad magic/);
    expect(() => decodeRequest(good.subarray(0, 27))).toThrow(ProtocolError);
    expect(() => decodeRequest(good.subarray(0, 3))).toThrow(ProtocolError);
    expect(() => decodeRequest(cat(good, Uint8Array.of(0)))).toThrow(ProtocolError);
  });
});

describe('extended BLOCK_STATUS payload', () => {
  test.each(blockStatusPayloads)('$name', ({ value, bytes }) => {
    expect(decodeBlockStatusPayload(bytes)).toEqual(value);
    expect(encodeBlockStatusPayload(value)).toEqual(bytes);
    expect(decodeBlockStatusPayload(encodeBlockStatusPayload(value))).toEqual(value);
  });

  test.each([0, 7, 10, 13])('length %i is refused', (n) => {
    expect(() => decodeBlockStatusPayload(new Uint8Array(n))).toThrow(ProtocolError);
  });
});

describe('simple replies', () => {
  test.each(simpleReplies)('$name', ({ value, bytes }) => {
    const header = bytes.subarray(0, Size.SIMPLE_REPLY);
    expect(bytes.subarray(Size.SIMPLE_REPLY)).toEqual(value.data ?? new Uint8Array(0));
    expect(decodeSimpleReply(header)).toEqual(value.reply);
    expect(cat(encodeSimpleReply(value.reply), value.data)).toEqual(bytes);
    const buf = new Uint8Array(20);
    expect(writeSimpleReply(buf, 4, value.reply)).toBe(16);
    expect(buf.subarray(4)).toEqual(header);
    expect(decodeSimpleReply(encodeSimpleReply(value.reply))).toEqual(value.reply);
  });

  test('bad magic and truncation are refused', () => {
    const b = encodeSimpleReply({ error: 0, cookie: 1n });
    expect(() => decodeSimpleReply(b.subarray(0, 15))).toThrow(ProtocolError);
    const bad = b.slice();
    bad[3] = 0;
    expect(() => decodeSimpleReply(bad)).toThrow(/bad magic/);
  });
});

describe('reply chunks', () => {
  test.each(chunks)('$name', ({ value, bytes }) => {
    const size = value.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
    const header = decodeChunkHeader(bytes.subarray(0, size));
    const payload = bytes.subarray(size);
    expect(header).toEqual({
      extended: value.extended,
      flags: value.done ? 1 : 0,
      type: chunkTypeOf(value.payload),
      cookie: value.cookie,
      length: payload.length,
      ...(value.extended ? { offset: value.offset ?? 0n } : {}),
    });
    expect(decodeChunkPayload(header.type, payload)).toEqual(value.payload);
    const opts = { done: value.done, extended: value.extended, ...(value.offset === undefined ? {} : { offset: value.offset }) };
    expect(encodeChunk(value.cookie, value.payload, opts)).toEqual(bytes);
    expect(encodeChunkPayload(value.payload)).toEqual(payload);
    const buf = new Uint8Array(size + 1);
    expect(writeChunkHeader(buf, 1, header, value.extended)).toBe(size);
    expect(buf.subarray(1)).toEqual(bytes.subarray(0, size));
    const again = encodeChunk(value.cookie, value.payload, opts);
    expect(decodeChunkPayload(header.type, again.subarray(size))).toEqual(value.payload);
  });

  test('encodeChunk defaults to a DONE structured chunk', () => {
    const c = encodeChunk(9n, { kind: 'none' });
    expect(decodeChunkHeader(c)).toEqual({ extended: false, flags: 1, type: 0, cookie: 9n, length: 0 });
  });

  test.each([
    ['NONE with a payload', 0, [0]],
    ['OFFSET_DATA without data', 1, [0, 0, 0, 0, 0, 0, 0, 0]],
    ['OFFSET_DATA shorter than its offset', 1, [0, 0, 0]],
    ['OFFSET_HOLE of size 0', 2, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
    ['OFFSET_HOLE too long', 2, new Array(13).fill(1)],
    ['BLOCK_STATUS without extents', 5, [0, 0, 0, 1]],
    ['BLOCK_STATUS with a partial extent', 5, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]],
    ['BLOCK_STATUS_EXT with count 0', 6, [0, 0, 0, 1, 0, 0, 0, 0]],
    ['BLOCK_STATUS_EXT count larger than the payload', 6, [0, 0, 0, 1, 0, 0, 0, 2, ...new Array(16).fill(0)]],
    ['BLOCK_STATUS_EXT status over 32 bits', 6, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]],
    ['ERROR message longer than the chunk', 0x8001, [0, 0, 0, 5, 0, 9, 0x61]],
    ['ERROR with trailing bytes', 0x8001, [0, 0, 0, 5, 0, 0, 1]],
    ['ERROR_OFFSET without its offset', 0x8002, [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]],
  ])('%s is a ProtocolError', (_name, type, bytes) => {
    expect(() => decodeChunkPayload(type, Uint8Array.from(bytes))).toThrow(ProtocolError);
  });

  test('readOffsetData: the offset as a number and the data as a view, as decodeChunkPayload has them', () => {
    const payload = encodeChunkPayload({ kind: 'offset-data', offset: 2n ** 53n - 1n, data: Uint8Array.of(1, 2, 3) });
    const r = readOffsetData(payload)!;
    expect(r.offset).toBe(Number.MAX_SAFE_INTEGER);
    expect([...r.data]).toEqual([1, 2, 3]);
    expect(r.data.buffer).toBe(payload.buffer); // not a copy
    expect(readOffsetData(new Uint8Array(8))).toBeUndefined(); // no data: decodeChunkPayload names the fault
    expect(readOffsetData(new Uint8Array(3))).toBeUndefined();
    const beyond = encodeChunkPayload({ kind: 'offset-data', offset: 2n ** 53n, data: Uint8Array.of(1) });
    expect(() => readOffsetData(beyond)).toThrow(/READ chunk offset 9007199254740992 is beyond 2\^53/);
  });

  test('readErrorChunkHead: errno and message length of any error type; a head or message cut short is a ProtocolError', () => {
    const known = encodeChunkPayload({ kind: 'error-offset', error: 5, message: 'bad', offset: 7n });
    expect(readErrorChunkHead(0x8002, known)).toEqual({ error: 5, messageLength: 3 });
    expect(readErrorChunkHead(0x8077, Uint8Array.of(0, 0, 0, 28, 0x13, 0x88, ...new Uint8Array(5000)))).toEqual({
      error: 28,
      messageLength: 5000,
    });
    expect(() => readErrorChunkHead(0x8077, Uint8Array.of(0, 0, 0, 5, 0))).toThrow(/error chunk type 0x8077 of 5 bytes/);
    expect(() => readErrorChunkHead(0x8077, Uint8Array.of(0, 0, 0, 5, 0, 3, 0x61))).toThrow(/message length 3 exceeds the chunk/);
  });

  test('an ERROR message that is not UTF-8 is kept', () => {
    expect(decodeChunkPayload(0x8001, Uint8Array.of(0, 0, 0, 5, 0, 1, 0xff))).toEqual({ kind: 'error', error: 5, message: '\ufffd' });
  });

  test('bad chunk magic is refused', () => {
    expect(() => decodeChunkHeader(new Uint8Array(20))).toThrow(/bad magic/);
    expect(() => decodeChunkHeader(chunks[0]!.bytes.subarray(0, 19))).toThrow(ProtocolError);
  });
});
