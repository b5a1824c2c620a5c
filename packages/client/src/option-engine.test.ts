// The option engine with plain values: greetings and option replies in (decoded by
// the protocol's stream decoder, as on the wire), request bytes and results out.

import {
  ClientStreamDecoder,
  decodeOptionRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  HandshakeFlag,
  Info,
  NbdOptionError,
  NbdStateError,
  NbdUnsupportedError,
  Option,
  OptionReply,
  type OptionReplyMessage,
  type OptionRequest,
  ProtocolError,
  type ServerFrame,
  ServerStreamDecoder,
  TransmissionFlag,
} from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { type AnyStepCall, OptionEngine, type OptionReplyLimits } from './option-engine.js';
import { beforeListMetaContext, goSteps, selectedContexts } from './option-plans.js';

/** Frames as the client's decoder makes them from `bytes`. */
function frames(decoder: ServerStreamDecoder, ...bytes: Uint8Array[]): ServerFrame[] {
  for (const b of bytes) decoder.push(b);
  const out: ServerFrame[] = [];
  for (let f = decoder.next(); f; f = decoder.next()) out.push(f);
  return out;
}

/** An engine past a fixed-newstyle greeting (with NO_ZEROES), and its decoder. */
function greeted(flags = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, limits?: OptionReplyLimits) {
  const engine = new OptionEngine(limits);
  const decoder = new ServerStreamDecoder();
  const [g] = frames(decoder, encodeGreeting({ style: 'newstyle', flags }));
  const out = engine.greet(g!);
  return { engine, decoder, clientFlags: out.done ? out.value : undefined };
}

/** What the server reads from `bytes`. */
function sent(bytes: Uint8Array): OptionRequest {
  const d = new ClientStreamDecoder();
  d.startOptions();
  d.push(bytes);
  const f = d.next();
  if (f?.kind !== 'option') throw new Error('not an option');
  return decodeOptionRequest(f.option, f.data);
}

/** Runs one step: its request, then `replies` fed one by one; returns what it sent and the outcome. */
function exchange(e: ReturnType<typeof greeted>, call: AnyStepCall, option: number, replies: OptionReplyMessage[]) {
  const { bytes, feed } = e.engine.start(call);
  let value: unknown;
  let done = false;
  for (const f of frames(e.decoder, ...replies.map((r) => encodeOptionReply(option, r)))) {
    const out = feed(f);
    if (out.done) {
      value = out.value;
      done = true;
    }
  }
  return { request: sent(bytes), value, done };
}

const ack: OptionReplyMessage = { kind: 'ack' };
const exportInfo = (size = 1n << 20n): OptionReplyMessage => ({
  kind: 'info',
  info: { kind: 'export', size, flags: TransmissionFlag.HAS_FLAGS },
});

describe('OptionEngine', () => {
  test("an option's replies before its final one are bounded in number and in bytes: past either, a ProtocolError", () => {
    const server = (name: string): OptionReplyMessage => ({ kind: 'server', name, description: '' });
    const bounded = (replies: number, bytes: number) => greeted(undefined, { replies, bytes });
    // 4 + name bytes each: three of 5 bytes fit 3 replies and 15 bytes exactly.
    const list = (e: ReturnType<typeof greeted>, n: number) =>
      exchange(e, { kind: 'list', args: undefined }, Option.LIST, [...Array.from({ length: n }, () => server('a')), ack]);
    expect(list(bounded(3, 15), 3).value).toHaveLength(3);
    expect(() => list(bounded(3, 1000), 4)).toThrow(
      /NBD_OPT_LIST: the server sent more than 3 replies before its final one \(maxOptionReplies\)/,
    );
    expect(() => list(bounded(1000, 14), 3)).toThrow(/NBD_OPT_LIST: the server's replies passed 14 bytes before its final one/);
    const contexts = bounded(2, 1000);
    expect(() =>
      exchange(contexts, { kind: 'list-meta-context', args: { name: '', queries: [] } }, Option.LIST_META_CONTEXT, [
        { kind: 'meta-context', id: 1, name: 'a' },
        { kind: 'meta-context', id: 2, name: 'b' },
        { kind: 'meta-context', id: 3, name: 'c' },
      ]),
    ).toThrow(ProtocolError);
  });

  test('a fixed-newstyle greeting: client flags echo FIXED_NEWSTYLE and NO_ZEROES; oldstyle needs no options', () => {
    const e = greeted();
    expect([...e.clientFlags!]).toEqual([0, 0, 0, 3]);
    expect(e.engine.state).toMatchObject({ phase: 'options', style: 'fixed-newstyle', noZeroes: true });
    const plain = greeted(0);
    expect([...plain.clientFlags!]).toEqual([0, 0, 0, 0]);
    expect(plain.engine.state.style).toBe('newstyle');
    const old = new OptionEngine();
    const [g] = frames(new ServerStreamDecoder(), encodeGreeting({ style: 'oldstyle', size: 4096n, flags: 0x10001 }));
    expect(old.greet(g!)).toEqual({ done: true, value: undefined });
    expect([...goSteps(old.state, { name: '', structured: true, extended: false, metaContexts: [] })]).toEqual([]);
    expect(old.state).toMatchObject({ phase: 'transmission', export: { size: 4096, flags: 1 } });
  });

  test('LIST: SERVER replies, then ACK, give the listing; INFO needs NBD_INFO_EXPORT before ACK', () => {
    const e = greeted();
    const list = exchange(e, { kind: 'list', args: undefined }, Option.LIST, [
      { kind: 'server', name: 'a', description: 'first' },
      { kind: 'server', name: 'b', description: '' },
      ack,
    ]);
    expect(list.request).toEqual({ kind: 'list' });
    expect(list.value).toEqual([
      { name: 'a', description: 'first' },
      { name: 'b', description: '' },
    ]);
    const info = exchange(e, { kind: 'info', args: { name: 'a' } }, Option.INFO, [
      exportInfo(),
      { kind: 'info', info: { kind: 'name', name: 'canonical' } },
      ack,
    ]);
    expect(info.request).toEqual({ kind: 'info', name: 'a', requests: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE] });
    expect(info.value).toMatchObject({ name: 'canonical', size: 1 << 20 });
    expect(() => exchange(e, { kind: 'info', args: { name: 'a' } }, Option.INFO, [ack])).toThrow(/without NBD_INFO_EXPORT/);
  });

  test('a refusal is an NbdOptionError naming option, reply and message; the engine stays in options', () => {
    const e = greeted();
    const err = (() => {
      try {
        exchange(e, { kind: 'info', args: { name: 'nope' } }, Option.INFO, [
          { kind: 'error', code: OptionReply.ERR_UNKNOWN, message: 'unknown export "nope"' },
        ]);
      } catch (x) {
        return x;
      }
    })();
    expect(err).toBeInstanceOf(NbdOptionError);
    expect((err as Error).message).toBe('NBD_OPT_INFO refused: ERR_UNKNOWN: unknown export "nope"');
    expect(e.engine.state.phase).toBe('options');
    expect(e.engine.busy).toBe(false);
  });

  test('ERR_SHUTDOWN closes the negotiation; a reply for another option is a ProtocolError', () => {
    const e = greeted();
    expect(() =>
      exchange(e, { kind: 'list', args: undefined }, Option.LIST, [{ kind: 'error', code: OptionReply.ERR_SHUTDOWN, message: '' }]),
    ).toThrow(NbdOptionError);
    expect(e.engine.state.phase).toBe('closed');
    const f = greeted();
    expect(() => exchange(f, { kind: 'list', args: undefined }, Option.INFO, [ack])).toThrow(
      /reply for option NBD_OPT_INFO while waiting for NBD_OPT_LIST/,
    );
  });

  test('one option at a time; non-fixed servers take EXPORT_NAME only', () => {
    const e = greeted();
    e.engine.start({ kind: 'list', args: undefined });
    expect(() => e.engine.start({ kind: 'list', args: undefined })).toThrow(NbdStateError);
    const plain = greeted(0);
    expect(() => plain.engine.start({ kind: 'info', args: { name: '' } })).toThrow(
      /the server is newstyle; only fixed-newstyle servers accept NBD_OPT_INFO/,
    );
    expect([...goSteps(plain.engine.state, { name: 'x', structured: true, extended: false, metaContexts: [] })]).toEqual([
      { kind: 'export-name', args: { name: 'x' } },
    ]);
    expect(() => [
      ...goSteps(plain.engine.state, { name: 'x', structured: true, extended: false, metaContexts: ['base:allocation'] }),
    ]).toThrow(NbdUnsupportedError);
  });
});

describe('go() plan', () => {
  /** Drives goSteps through an engine, answering each option with `answer(request)`. */
  function drive(e: ReturnType<typeof greeted>, want: Parameters<typeof goSteps>[1], answer: (r: OptionRequest) => Uint8Array[]) {
    const seen: string[] = [];
    for (const call of goSteps(e.engine.state, want)) {
      const { bytes, feed } = e.engine.start(call);
      const req = sent(bytes);
      seen.push(req.kind);
      if (req.kind === 'export-name') e.decoder.expectExportNameReply(e.engine.state.noZeroes);
      for (const f of frames(e.decoder, ...answer(req))) feed(f);
    }
    return seen;
  }

  test('extended headers refused → structured replies → meta contexts → GO; the record says what was settled', () => {
    const e = greeted();
    const seen = drive(e, { name: 'disk', structured: true, extended: true, metaContexts: ['base:allocation'] }, (r) => {
      if (r.kind === 'extended-headers')
        return [encodeOptionReply(Option.EXTENDED_HEADERS, { kind: 'error', code: OptionReply.ERR_UNSUP, message: '' })];
      if (r.kind === 'structured-reply') return [encodeOptionReply(Option.STRUCTURED_REPLY, ack)];
      if (r.kind === 'set-meta-context')
        return [
          encodeOptionReply(Option.SET_META_CONTEXT, { kind: 'meta-context', id: 5, name: 'base:allocation' }),
          encodeOptionReply(Option.SET_META_CONTEXT, ack),
        ];
      return [encodeOptionReply(Option.GO, exportInfo()), encodeOptionReply(Option.GO, ack)];
    });
    expect(seen).toEqual(['extended-headers', 'structured-reply', 'set-meta-context', 'go']);
    const n = e.engine.state;
    expect(n).toMatchObject({ phase: 'transmission', structured: true, extended: false, export: { name: 'disk' } });
    expect([...selectedContexts(n, 'disk', ['base:allocation'])]).toEqual([['base:allocation', 5]]);
    expect(selectedContexts(n, 'other', ['base:allocation']).size).toBe(0);
  });

  test('GO answered ERR_UNSUP falls back to EXPORT_NAME (not after extended headers)', () => {
    const e = greeted();
    const seen = drive(e, { name: 'legacy', structured: false, extended: false, metaContexts: [] }, (r) =>
      r.kind === 'go'
        ? [encodeOptionReply(Option.GO, { kind: 'error', code: OptionReply.ERR_UNSUP, message: '' })]
        : [encodeExportNameReply({ size: 512n, flags: 1 }, true)],
    );
    expect(seen).toEqual(['go', 'export-name']);
    expect(e.engine.state).toMatchObject({ phase: 'transmission', export: { name: 'legacy', size: 512 } });

    const x = greeted();
    expect(() =>
      drive(x, { name: 'd', structured: true, extended: true, metaContexts: [] }, (r) =>
        r.kind === 'go'
          ? [encodeOptionReply(Option.GO, { kind: 'error', code: OptionReply.ERR_UNSUP, message: '' })]
          : [encodeOptionReply(r.kind === 'extended-headers' ? Option.EXTENDED_HEADERS : Option.STRUCTURED_REPLY, ack)],
      ),
    ).toThrow(/NBD_OPT_GO refused: ERR_UNSUP/);
  });

  test('no structured replies after they were negotiated; listMetaContexts asks for them first', () => {
    const e = greeted();
    const refused = () =>
      drive(e, { name: '', structured: true, extended: false, metaContexts: ['x'] }, (r) => {
        if (r.kind === 'structured-reply') return [encodeOptionReply(Option.STRUCTURED_REPLY, ack)];
        return [encodeOptionReply(Option.SET_META_CONTEXT, { kind: 'error', code: OptionReply.ERR_INVALID, message: 'no' })];
      });
    expect(refused).toThrow('NBD_OPT_SET_META_CONTEXT refused: ERR_INVALID: no');
    expect(e.engine.state).toMatchObject({ phase: 'options', structured: true });
    expect(() => [...goSteps(e.engine.state, { name: '', structured: false, extended: false, metaContexts: [] })]).toThrow(
      /already negotiated/,
    );
    expect([...beforeListMetaContext(e.engine.state)]).toEqual([]);
    expect([...beforeListMetaContext(greeted().engine.state)].map((s) => s.kind)).toEqual(['structured-reply']);
  });

  test('an unexpected frame during the handshake is a ProtocolError', () => {
    const e = greeted();
    const simple: ServerFrame = { kind: 'simple-reply', error: 0, cookie: 1n };
    expect(() => e.engine.greet(simple)).toThrow(/expected the server's greeting, got simple-reply/);
    const list = e.engine.start({ kind: 'list', args: undefined });
    expect(() => list.feed(simple)).toThrow(/expected an option reply, got simple-reply/);
    // A step's feed once its option is over (the engine moved on): nothing is in progress for it.
    const [acked] = frames(e.decoder, encodeOptionReply(Option.LIST, ack));
    expect(list.feed(acked!)).toEqual({ done: true, value: [] });
    expect(() => list.feed(acked!)).toThrow(/no option is in progress/);
  });
});
