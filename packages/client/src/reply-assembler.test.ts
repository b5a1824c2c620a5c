// The reply assembler with plain values: chunk headers and payloads in, results or
// errors out. No sockets; the views it holds are counted by a fake holder.

import {
  type ChunkHeader,
  type ChunkPayload,
  ChunkType,
  Command,
  CommandFlag,
  chunkTypeOf,
  Errno,
  encodeChunkPayload,
  NbdErrnoError,
  ProtocolError,
  ReplyFlag,
} from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { assembleChunk, assembleSimple, simpleReplyPayload } from './reply-assembler.js';
import {
  abandonReply,
  assembledBytes,
  plainReply,
  type ReadReply,
  type ReplyRules,
  type ReplyState,
  readReply,
  statusReply,
  takeSingle,
} from './reply-state.js';

const STRICT: ReplyRules = { structured: true, extended: false, strict: true };
const RELAXED: ReplyRules = { ...STRICT, strict: false };

/** Counts holds and releases per view. */
function holder() {
  const held = new Map<Uint8Array, number>();
  return {
    held,
    hold: (v: Uint8Array) => held.set(v, (held.get(v) ?? 0) + 1),
    release: (v: Uint8Array) => {
      const n = (held.get(v) ?? 0) - 1;
      if (n < 0) throw new Error('released a view not held');
      if (n === 0) held.delete(v);
      else held.set(v, n);
    },
  };
}

/** Feeds one chunk: its header (DONE unless `done` is false) and encoded payload. */
function chunk(rules: ReplyRules, st: ReplyState, payload: ChunkPayload, done = true, views = holder(), extra: Partial<ChunkHeader> = {}) {
  const bytes = encodeChunkPayload(payload);
  const h: ChunkHeader = { flags: done ? ReplyFlag.DONE : 0, type: chunkTypeOf(payload), cookie: 1n, length: bytes.length, ...extra };
  return assembleChunk(rules, st, h, bytes, views);
}

const data = (offset: number, ...v: number[]): ChunkPayload => ({ kind: 'offset-data', offset: BigInt(offset), data: Uint8Array.from(v) });
const hole = (offset: number, size: number): ChunkPayload => ({ kind: 'offset-hole', offset: BigInt(offset), size });
const read = (offset: number, length: number, dest?: Uint8Array) => readReply(offset, length, 0, dest);
/** A finished READ's bytes, as its caller gets them: the one chunk's view, or the buffer assembled. */
const bytesOf = (st: ReadReply) => [...(takeSingle(st) ?? assembledBytes(st))];

describe('READ replies', () => {
  test('one chunk covering the request is handed on as the view itself, held in its arena', () => {
    const views = holder();
    const st = read(100, 4);
    const out = chunk(STRICT, st, data(100, 1, 2, 3, 4), true, views);
    expect(out).toEqual({ ok: true });
    const v = st.single!;
    expect([...v]).toEqual([1, 2, 3, 4]);
    expect(st.dest).toBeUndefined(); // no copy
    expect(views.held.get(v)).toBe(1);
  });

  test('chunks in any order and holes assemble into one buffer; a held view is given back when a second chunk comes', () => {
    const views = holder();
    const st = read(0, 8);
    expect(chunk(STRICT, st, hole(4, 2), false, views)).toBeUndefined();
    expect(chunk(STRICT, st, data(6, 7, 8), false, views)).toBeUndefined();
    const out = chunk(STRICT, st, data(0, 1, 2, 3, 4), true, views);
    expect(out).toEqual({ ok: true });
    expect(bytesOf(st)).toEqual([1, 2, 3, 4, 0, 0, 7, 8]);
    expect(views.held.size).toBe(0);
  });

  test('overlapping chunks and a gap, then DONE: a ProtocolError, never zeroes (strict)', () => {
    const st = read(0, 8);
    chunk(STRICT, st, data(0, 1, 2, 3, 4), false);
    expect(() => chunk(STRICT, st, data(2, 9, 9), false)).toThrow(/overlaps bytes an earlier chunk described/);
    // The same reply relaxed: the overlap is merged, the gap (bytes 4..8) fails the read with EIO.
    const relaxed = read(0, 8);
    chunk(RELAXED, relaxed, data(0, 1, 2, 3, 4), false);
    expect(chunk(RELAXED, relaxed, data(2, 9, 9), false)).toBeUndefined();
    const out = chunk(RELAXED, relaxed, { kind: 'none' });
    expect(out).toMatchObject({ ok: false, error: { errno: Errno.EIO } });
  });

  test('a gap at DONE is a ProtocolError naming the rule; so is DONE with no content at all', () => {
    const st = read(0, 8);
    chunk(STRICT, st, data(0, 1, 2), false);
    chunk(STRICT, st, data(6, 7, 8), false);
    expect(() => chunk(STRICT, st, { kind: 'none' })).toThrow(/4 of 8 bytes not described, the first at 2 .*MUST cover the whole request/);
    expect(() => chunk(STRICT, read(0, 8), { kind: 'none' })).toThrow(ProtocolError);
  });

  test('data outside the request is a ProtocolError, relaxed or not', () => {
    for (const rules of [STRICT, RELAXED]) {
      expect(() => chunk(rules, read(10, 4), data(12, 1, 2, 3))).toThrow(/outside the request 10\+4/);
      expect(() => chunk(rules, read(10, 4), hole(8, 4))).toThrow(/outside the request/);
    }
  });

  test('after the caller gives up, later chunks are checked but never written into its buffer', () => {
    const views = holder();
    const dest = new Uint8Array(4).fill(0xee);
    const st = read(0, 4, dest);
    chunk(STRICT, st, data(0, 1, 2), false, views);
    abandonReply(st, views);
    chunk(STRICT, st, data(2, 3, 4), true, views);
    expect([...dest]).toEqual([1, 2, 0xee, 0xee]);
    // A held single view goes back at the abort.
    const st2 = read(0, 2);
    chunk(STRICT, st2, data(0, 5, 6), false, views);
    expect(views.held.size).toBe(1);
    abandonReply(st2, views);
    expect(views.held.size).toBe(0);
    expect(() => chunk(STRICT, st2, data(1, 5), true, views)).toThrow(/overlaps/); // still checked
  });

  test('an error chunk fails the read with its errno, message and offset; a held view goes back', () => {
    const views = holder();
    const st = read(0, 4);
    chunk(STRICT, st, data(0, 1, 2, 3, 4), false, views);
    const out = chunk(STRICT, st, { kind: 'error-offset', error: Errno.EIO, message: 'bad sector', offset: 2n }, true, views);
    expect(out).toMatchObject({ ok: false });
    const err = (out as { error: NbdErrnoError }).error;
    expect(err).toBeInstanceOf(NbdErrnoError);
    expect(err).toMatchObject({ errno: Errno.EIO, offset: 2 });
    expect(err.message).toMatch(/bad sector \(at offset 2\)/);
    expect(views.held.size).toBe(0);
  });

  test('simple replies: data for READ unless structured replies are on (strict), errors by errno', () => {
    expect(simpleReplyPayload(STRICT, read(0, 4))).toBeUndefined();
    expect(simpleReplyPayload({ ...STRICT, structured: false }, read(0, 4))).toBe(4);
    expect(simpleReplyPayload(RELAXED, read(0, 4))).toBe(4);
    expect(() => assembleSimple(STRICT, read(0, 4), 0, undefined, holder())).toThrow(/MUST answer READ with structured replies/);
    const simple = { ...STRICT, structured: false };
    const two = read(0, 2);
    expect(assembleSimple(simple, two, 0, Uint8Array.of(7, 8), holder())).toEqual({ ok: true });
    expect(bytesOf(two)).toEqual([7, 8]);
    const bad = assembleSimple(simple, plainReply(Command.WRITE, 0, 1, 0), 9999, undefined, holder());
    expect(bad).toMatchObject({ ok: false, error: { errno: Errno.EINVAL } }); // unknown errno values read as EINVAL
  });
});

describe('rules for any reply', () => {
  const write = () => plainReply(Command.WRITE, 0, 4, 0);

  test('NONE without DONE breaks a MUST (strict); relaxed, it is ignored', () => {
    expect(() => chunk(STRICT, write(), { kind: 'none' }, false)).toThrow(/NONE chunk without the DONE flag/);
    const st = write();
    expect(chunk(RELAXED, st, { kind: 'none' }, false)).toBeUndefined();
    expect(chunk(RELAXED, st, { kind: 'none' })).toEqual({ ok: true });
  });

  test('content chunks for a command that is not READ, and chunks without structured replies, are ProtocolErrors (strict)', () => {
    expect(() => chunk(STRICT, write(), data(0, 1))).toThrow(/OFFSET_DATA chunk in reply to NBD_CMD_WRITE/);
    expect(chunk(RELAXED, write(), data(0, 1))).toEqual({ ok: true });
    expect(() => chunk({ ...STRICT, structured: false }, write(), { kind: 'none' })).toThrow(/structured replies were not negotiated/);
    expect(chunk({ ...RELAXED, structured: false }, write(), { kind: 'none' })).toMatchObject({ ok: true });
  });

  test('an extended chunk must echo the request offset', () => {
    const ext = { ...STRICT, extended: true };
    expect(() => chunk(ext, plainReply(Command.FLUSH, 0, 0, 0), { kind: 'none' }, true, holder(), { offset: 8n })).toThrow(
      /offset 8 does not match/,
    );
    expect(chunk(ext, plainReply(Command.FLUSH, 0, 0, 0), { kind: 'none' }, true, holder(), { offset: 0n })).toMatchObject({ ok: true });
  });

  test('error chunks: value 0 breaks a MUST; unknown error types fail the request and keep the stream; unknown others do not', () => {
    expect(() => chunk(STRICT, write(), { kind: 'error', error: 0, message: '' })).toThrow(/MUST be nonzero/);
    expect(chunk(RELAXED, write(), { kind: 'error', error: 0, message: '' })).toMatchObject({ ok: false, error: { errno: Errno.EINVAL } });
    const unknownError = { kind: 'unknown', code: 0x8123, data: Uint8Array.of(0, 0, 0, 5, 0, 0) } as const;
    expect(chunk(STRICT, write(), unknownError)).toMatchObject({ ok: false, error: { errno: Errno.EIO } });
    expect(() => chunk(STRICT, write(), { kind: 'unknown', code: 0x8123, data: Uint8Array.of(0, 0, 0, 5) })).toThrow(ProtocolError);
    expect(() => chunk(RELAXED, write(), { kind: 'unknown', code: 77, data: new Uint8Array(0) })).toThrow(/unknown reply chunk type 0x4d/);
  });

  test('ERROR_OFFSET must lie within the request (strict)', () => {
    expect(() => chunk(STRICT, write(), { kind: 'error-offset', error: Errno.EIO, message: '', offset: 4n })).toThrow(
      /outside the request/,
    );
    expect(chunk(RELAXED, write(), { kind: 'error-offset', error: Errno.EIO, message: '', offset: 4n })).toMatchObject({
      ok: false,
      error: { offset: 4 },
    });
  });
});

describe('BLOCK_STATUS replies', () => {
  const status = (length: number, contextIds = [1], flags = 0) => statusReply(4096, length, flags, contextIds);
  const extents = (contextId: number, ...lengths: number[]): ChunkPayload => ({
    kind: 'block-status',
    contextId,
    extents: lengths.map((l, i) => ({ length: BigInt(l), flags: i })),
  });

  test('one chunk per context; extents become offsets from the request', () => {
    const st = status(8192, [1, 2]);
    chunk(STRICT, st, extents(2, 8192), false);
    const out = chunk(STRICT, st, extents(1, 4096, 65536));
    expect(out).toEqual({ ok: true });
    const m = st.extents;
    expect(m.get(1)).toEqual([
      { offset: 4096, length: 4096, flags: 0 },
      { offset: 8192, length: 65536, flags: 1 }, // the last extent may go past the request
    ]);
    expect(m.get(2)).toEqual([{ offset: 4096, length: 8192, flags: 0 }]);
  });

  test('extents whose first N-1 lengths already reach past the request: a ProtocolError (strict)', () => {
    expect(() => chunk(STRICT, status(8192), extents(1, 4096, 4096, 512))).toThrow(
      /first 2 extents already cover 8192 bytes of the 8192 asked/,
    );
    expect(chunk(RELAXED, status(8192), extents(1, 4096, 4096, 512))).toMatchObject({ ok: true });
  });

  test('zero-length extents are a ProtocolError even relaxed (a caller could never make progress)', () => {
    expect(() => chunk(RELAXED, status(8192), extents(1, 4096, 0))).toThrow(/length 0/);
  });

  test('REQ_ONE: exactly one extent, no longer than the request', () => {
    expect(() => chunk(STRICT, status(8192, [1], CommandFlag.REQ_ONE), extents(1, 512, 512))).toThrow(/REQ_ONE/);
    expect(() => chunk(STRICT, status(8192, [1], CommandFlag.REQ_ONE), extents(1, 16384))).toThrow(/REQ_ONE/);
    expect(chunk(STRICT, status(8192, [1], CommandFlag.REQ_ONE), extents(1, 8192))).toMatchObject({ ok: true });
  });

  test('contexts not asked about, twice the same context, a context missing at DONE', () => {
    expect(() => chunk(STRICT, status(512), extents(9, 512))).toThrow(/context id 9, which the request did not ask about/);
    const twice = status(512);
    chunk(STRICT, twice, extents(1, 512), false);
    expect(() => chunk(STRICT, twice, extents(1, 512))).toThrow(/a second block status chunk for context id 1/);
    const missing = status(512, [1, 2]);
    chunk(STRICT, missing, extents(1, 512), false);
    expect(() => chunk(STRICT, missing, { kind: 'none' })).toThrow(/without a status chunk for context id 2/);
    // Relaxed: the stray chunk is ignored, the missing context gets no extents, none at all fails the request.
    const relaxed = status(512, [1, 2]);
    chunk(RELAXED, relaxed, extents(9, 512), false);
    chunk(RELAXED, relaxed, extents(1, 512), false);
    expect(chunk(RELAXED, relaxed, { kind: 'none' })).toEqual({ ok: true });
    expect(relaxed.extents.get(2)).toEqual([]);
    expect(chunk(RELAXED, status(512), { kind: 'none' })).toMatchObject({ ok: false, error: { errno: Errno.EIO } });
  });

  test('the chunk type must match the headers negotiated', () => {
    const ext: ChunkPayload = { kind: 'block-status-ext', contextId: 1, extents: [{ length: 512n, flags: 0 }] };
    expect(() => chunk(STRICT, status(512), ext)).toThrow(/BLOCK_STATUS_EXT chunk without extended headers/);
    expect(() => chunk({ ...STRICT, extended: true }, status(512), extents(1, 512), true, holder(), { offset: 4096n })).toThrow(
      /only BLOCK_STATUS_EXT/,
    );
    expect(chunk(RELAXED, status(512), ext)).toMatchObject({ ok: true });
    expect(ChunkType.BLOCK_STATUS_EXT).toBe(6);
  });
});

describe('strict rules added by the hardening review', () => {
  const write = () => plainReply(Command.WRITE, 0, 4, 0);

  test('a simple reply cannot end a structured reply already under way (strict); relaxed, it ends it', () => {
    const st = write();
    expect(chunk(STRICT, st, { kind: 'error', error: Errno.EIO, message: 'first' }, false)).toBeUndefined();
    expect(() => assembleSimple(STRICT, st, 0, undefined, holder())).toThrow(/after chunks of a structured reply to it/);
    const relaxed = write();
    expect(chunk(RELAXED, relaxed, { kind: 'error', error: Errno.EIO, message: 'first' }, false)).toBeUndefined();
    expect(assembleSimple(RELAXED, relaxed, 0, undefined, holder())).toMatchObject({ ok: false, error: { errno: Errno.EIO } });
  });

  test('an error message over 4096 bytes breaks a MUST (strict); relaxed, the error is kept', () => {
    // u32 error 5 | u16 message length 5000 | 5000 bytes (our encoder refuses such messages: raw bytes)
    const raw = Uint8Array.of(0, 0, 0, 5, 0x13, 0x88, ...new Uint8Array(5000).fill(0x78));
    expect(() => chunk(STRICT, write(), { kind: 'unknown', code: 0x8001, data: raw })).toThrow(/message of 5000 bytes/);
    expect(() => chunk(STRICT, write(), { kind: 'unknown', code: 0x8009, data: raw })).toThrow(/MUST NOT exceed/);
    expect(chunk(RELAXED, write(), { kind: 'unknown', code: 0x8001, data: raw })).toMatchObject({ ok: false, error: { errno: Errno.EIO } });
  });
});
