// Every handshake fixture: decode, encode, and round trip.
import { describe, expect, test } from 'vitest';
import { Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { clientFlags, exportNameReplies, greetings, optionReplies, optionRequests } from './fixtures/handshake.js';
import {
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeOptionRequest,
  optionCode,
  optionReplyCode,
} from './handshake.js';

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe('greetings', () => {
  test.each(greetings)('$name', ({ value, bytes }) => {
    expect(bytes.length).toBe(value.style === 'oldstyle' ? Size.OLDSTYLE_GREETING : Size.NEWSTYLE_GREETING);
    expect(decodeGreeting(bytes)).toEqual(value);
    expect(encodeGreeting(value)).toEqual(bytes);
    expect(decodeGreeting(encodeGreeting(value))).toEqual(value);
  });
});

describe('client flags', () => {
  test.each(clientFlags)('$name', ({ value, bytes }) => {
    expect(decodeClientFlags(bytes)).toBe(value);
    expect(encodeClientFlags(value)).toEqual(bytes);
    expect(decodeClientFlags(encodeClientFlags(value))).toBe(value);
  });
});

// An option request frame is a 16-byte header the stream decoder splits off, then data.
function splitOption(bytes: Uint8Array): { code: number; data: Uint8Array } {
  const v = view(bytes);
  expect(v.getUint32(12)).toBe(bytes.length - Size.OPTION_HEADER); // the length field is honest
  return { code: v.getUint32(8), data: bytes.subarray(Size.OPTION_HEADER) };
}

describe('option requests', () => {
  test.each(optionRequests)('$name', ({ value, bytes }) => {
    const { code, data } = splitOption(bytes);
    expect(optionCode(value)).toBe(code);
    expect(decodeOptionRequest(code, data)).toEqual(value);
    expect(encodeOptionRequest(value)).toEqual(bytes);
    const again = splitOption(encodeOptionRequest(value));
    expect(decodeOptionRequest(again.code, again.data)).toEqual(value);
  });

  test('ABORT ignores data the client should not have sent', () => {
    expect(decodeOptionRequest(2, Uint8Array.of(1, 2))).toEqual({ kind: 'abort' });
  });

  test.each([3, 5, 8, 11])('option %i refuses data', (code) => {
    expect(() => decodeOptionRequest(code, Uint8Array.of(0))).toThrow(ProtocolError);
  });

  test('INFO with trailing bytes is refused', () => {
    const { data } = splitOption(encodeOptionRequest({ kind: 'info', name: 'a', requests: [] }));
    const longer = new Uint8Array(data.length + 1);
    longer.set(data);
    expect(() => decodeOptionRequest(6, longer)).toThrow(/trailing/);
  });

  test('names over 4096 bytes are refused by the encoder', () => {
    expect(() => encodeOptionRequest({ kind: 'export-name', name: 'x'.repeat(4097) })).toThrow(ProtocolError);
    expect(() => encodeOptionRequest({ kind: 'go', name: 'é'.repeat(2049), requests: [] })).toThrow(/4098 bytes/);
    expect(encodeOptionRequest({ kind: 'export-name', name: 'x'.repeat(4096) }).length).toBe(16 + 4096);
  });
});

function splitReply(bytes: Uint8Array): { option: number; type: number; data: Uint8Array } {
  const v = view(bytes);
  expect(v.getUint32(16)).toBe(bytes.length - Size.OPTION_REPLY_HEADER);
  return { option: v.getUint32(8), type: v.getUint32(12), data: bytes.subarray(Size.OPTION_REPLY_HEADER) };
}

describe('option replies', () => {
  test.each(optionReplies)('$name', ({ value, bytes }) => {
    const { option, type, data } = splitReply(bytes);
    expect(option).toBe(value.option);
    expect(optionReplyCode(value.reply)).toBe(type);
    expect(decodeOptionReply(type, data)).toEqual(value.reply);
    expect(encodeOptionReply(value.option, value.reply)).toEqual(bytes);
    const again = splitReply(encodeOptionReply(value.option, value.reply));
    expect(decodeOptionReply(again.type, again.data)).toEqual(value.reply);
  });

  test('ACK with data is refused', () => {
    expect(() => decodeOptionReply(1, Uint8Array.of(0))).toThrow(ProtocolError);
  });

  test('INFO EXPORT and BLOCK_SIZE must have their exact lengths', () => {
    expect(() => decodeOptionReply(3, new Uint8Array(11))).toThrow(ProtocolError); // EXPORT needs 12
    expect(() => decodeOptionReply(3, new Uint8Array(13))).toThrow(ProtocolError);
    const bs = new Uint8Array(15);
    bs[1] = 3;
    expect(() => decodeOptionReply(3, bs)).toThrow(ProtocolError); // BLOCK_SIZE needs 14
    expect(() => decodeOptionReply(3, new Uint8Array(1))).toThrow(ProtocolError); // no room for the type
  });

  test('an error message that is not UTF-8 is kept, not fatal', () => {
    const r = decodeOptionReply(0x80000001, Uint8Array.of(0x61, 0xff, 0x62));
    expect(r).toEqual({ kind: 'error', code: 0x80000001, message: 'a\ufffdb' });
  });

  test('a SERVER name that is not UTF-8 is a ProtocolError', () => {
    expect(() => decodeOptionReply(2, Uint8Array.of(0, 0, 0, 1, 0xff))).toThrow(/UTF-8/);
  });
});

describe('EXPORT_NAME reply', () => {
  test.each(exportNameReplies)('$name', ({ value, bytes }) => {
    expect(bytes.length).toBe(value.noZeroes ? Size.EXPORT_NAME_REPLY_NO_ZEROES : Size.EXPORT_NAME_REPLY);
    expect(decodeExportNameReply(bytes)).toEqual(value.reply);
    expect(encodeExportNameReply(value.reply, value.noZeroes)).toEqual(bytes);
    expect(decodeExportNameReply(encodeExportNameReply(value.reply, value.noZeroes))).toEqual(value.reply);
  });

  test('lengths other than 10 and 134 are refused', () => {
    expect(() => decodeExportNameReply(new Uint8Array(9))).toThrow(ProtocolError);
    expect(() => decodeExportNameReply(new Uint8Array(11))).toThrow(ProtocolError);
    expect(() => decodeExportNameReply(new Uint8Array(135))).toThrow(ProtocolError);
  });
});

describe('regressions found by fuzzing', () => {
  // fuzz/crashes/protocol-client-stream/crash-2ed4f802…: TextDecoder dropped a leading
  // byte-order mark, so "\uFEFFu" was read as the export "u" and re-encoded differently.
  test('an export name starting with U+FEFF keeps it, byte for byte', () => {
    const name = new Uint8Array([0xef, 0xbb, 0xbf, 0x75]);
    const data = new Uint8Array(4 + name.length + 2);
    new DataView(data.buffer).setUint32(0, name.length);
    data.set(name, 4);
    const req = decodeOptionRequest(7, data);
    expect(req).toEqual({ kind: 'go', name: '\ufeffu', requests: [] });
    expect(encodeOptionRequest(req).subarray(16)).toEqual(data);
    expect(decodeOptionRequest(1, name)).toEqual({ kind: 'export-name', name: '\ufeffu' });
  });
});
