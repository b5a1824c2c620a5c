// The negotiation engine driven with plain values: frames in, replies and steps out.

import {
  type ClientFrame,
  encodeOptionReply,
  encodeOptionRequest,
  Info,
  Option,
  OptionReply,
  type OptionRequest,
  TransmissionFlag,
} from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import type { Device } from './device.js';
import { MemoryDevice } from './memory-device.js';
import { MAX_OPTIONS, Negotiation, type NegotiationConfig, type NegotiationStep } from './negotiation.js';

const SIZE = 1 << 20;

function engine(over: Partial<NegotiationConfig> = {}): Negotiation {
  return new Negotiation({
    exports: [
      { name: 'a', description: 'first', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'b', size: SIZE, device: new MemoryDevice(SIZE), readOnly: true },
    ],
    maxPayload: 1 << 20,
    readOnly: false,
    clientAddress: 'test',
    ...over,
  });
}

/** The option frame a client would send for `req`. */
function option(req: OptionRequest): ClientFrame {
  const bytes = encodeOptionRequest(req);
  return { kind: 'option', option: new DataView(bytes.buffer).getUint32(8), data: bytes.subarray(16) };
}

async function step(n: Negotiation, frame: ClientFrame): Promise<NegotiationStep> {
  return n.handle(frame);
}

/** Reply kinds (or error names) of a step, for compact assertions. */
function replies(s: NegotiationStep): string[] {
  return s.send.map((m) => {
    if (m.kind !== 'option-reply') return m.kind;
    const r = m.reply;
    if (r.kind === 'error') return `error ${r.code.toString(16)}`;
    return r.kind === 'info' ? `info ${r.info.kind}` : r.kind;
  });
}

async function fixed(n = engine()): Promise<Negotiation> {
  expect(await step(n, { kind: 'client-flags', flags: 3 })).toEqual({ next: 'negotiate', send: [] });
  return n;
}

describe('Negotiation', () => {
  it('greets fixed newstyle with NO_ZEROES; closes on unknown client flags', async () => {
    const n = engine();
    expect(n.greeting()).toEqual({ style: 'newstyle', flags: 3 });
    expect((await step(n, { kind: 'client-flags', flags: 0x10 })).next).toBe('close');
  });

  it('LIST names every export, then ACK', async () => {
    const s = await step(await fixed(), option({ kind: 'list' }));
    expect(s.next).toBe('negotiate');
    expect(replies(s)).toEqual(['server', 'server', 'ack']);
  });

  it('INFO answers export, name, description and block size; GO moves to transmission with a session', async () => {
    const n = await fixed();
    const info = await step(n, option({ kind: 'info', name: 'a', requests: [Info.NAME, Info.DESCRIPTION] }));
    expect(replies(info)).toEqual(['info export', 'info name', 'info description', 'info block-size', 'ack']);
    expect(info.next).toBe('negotiate');
    const go = await step(n, option({ kind: 'go', name: 'b', requests: [] }));
    expect(go.next).toBe('transmit');
    if (go.next !== 'transmit') return;
    expect(go.session.export.name).toBe('b');
    expect(go.session.flags & TransmissionFlag.READ_ONLY).toBeTruthy();
    expect(go.session.structured).toBe(false);
  });

  it('an unknown export is ERR_UNKNOWN for INFO/GO and a close for EXPORT_NAME', async () => {
    const n = await fixed();
    expect(replies(await step(n, option({ kind: 'go', name: 'nope', requests: [] })))).toEqual([
      `error ${OptionReply.ERR_UNKNOWN.toString(16)}`,
    ]);
    expect((await step(n, option({ kind: 'export-name', name: 'nope' }))).next).toBe('close');
  });

  it('structured replies, extended headers and meta contexts reach the session', async () => {
    const n = await fixed();
    expect(replies(await step(n, option({ kind: 'extended-headers' })))).toEqual(['ack']);
    expect(replies(await step(n, option({ kind: 'structured-reply' })))).toEqual([`error ${OptionReply.ERR_INVALID.toString(16)}`]);
    expect(replies(await step(n, option({ kind: 'set-meta-context', name: 'a', queries: ['base:allocation'] })))).toEqual([
      'meta-context',
      'ack',
    ]);
    const go = await step(n, option({ kind: 'go', name: 'a', requests: [] }));
    if (go.next !== 'transmit') throw new Error('no transmit');
    expect(go.session).toMatchObject({ structured: true, extended: true });
    expect([...go.session.metaContexts]).toEqual([[1, 'base:allocation']]);
    // EXPORT_NAME after extended headers has no way to tell the client: close.
    const m = await fixed();
    await step(m, option({ kind: 'extended-headers' }));
    expect((await step(m, option({ kind: 'export-name', name: 'a' }))).next).toBe('close');
  });

  it('meta contexts need structured replies, and SET for another export does not carry over', async () => {
    const n = await fixed();
    expect(replies(await step(n, option({ kind: 'list-meta-context', name: 'a', queries: [] })))).toEqual([
      `error ${OptionReply.ERR_INVALID.toString(16)}`,
    ]);
    await step(n, option({ kind: 'structured-reply' }));
    await step(n, option({ kind: 'set-meta-context', name: 'a', queries: ['base:allocation'] }));
    const go = await step(n, option({ kind: 'go', name: 'b', requests: [] }));
    if (go.next !== 'transmit') throw new Error('no transmit');
    expect(go.session.metaContexts.size).toBe(0);
  });

  it('malformed option data is ERR_INVALID; unknown options ERR_UNSUP; STARTTLS without TLS ERR_POLICY; ABORT acks and closes', async () => {
    const n = await fixed();
    expect(replies(await step(n, { kind: 'option', option: Option.INFO, data: Uint8Array.of(0, 0, 0, 9) }))).toEqual([
      `error ${OptionReply.ERR_INVALID.toString(16)}`,
    ]);
    expect(replies(await step(n, { kind: 'option', option: 99, data: new Uint8Array(0) }))).toEqual([
      `error ${OptionReply.ERR_UNSUP.toString(16)}`,
    ]);
    expect(replies(await step(n, option({ kind: 'starttls' })))).toEqual([`error ${OptionReply.ERR_POLICY.toString(16)}`]);
    const abort = await step(n, option({ kind: 'abort' }));
    expect(abort.next).toBe('close');
    expect(replies(abort)).toEqual(['ack']);
  });

  it('a plain newstyle client may only send EXPORT_NAME, and gets the reply with zeroes', async () => {
    const n = engine();
    await step(n, { kind: 'client-flags', flags: 0 });
    expect((await step(n, option({ kind: 'list' }))).next).toBe('close');
    const m = engine();
    await step(m, { kind: 'client-flags', flags: 0 });
    const s = await step(m, option({ kind: 'export-name', name: '' }));
    expect(s.next).toBe('transmit');
    expect(s.send).toEqual([{ kind: 'export-name-reply', size: BigInt(SIZE), flags: expect.any(Number), noZeroes: false }]);
  });

  it('GO without BLOCK_SIZE for a device that needs alignment is ERR_BLOCK_SIZE_REQD', async () => {
    const device = new MemoryDevice(SIZE);
    const aligned = Object.assign(Object.create(device) as Device, { blockSizes: { min: 512, preferred: 4096, max: 65536 } });
    const n = await fixed(engine({ exports: [{ name: 'x', size: SIZE, device: aligned }] }));
    expect(replies(await step(n, option({ kind: 'go', name: 'x', requests: [] })))).toEqual([
      `error ${OptionReply.ERR_BLOCK_SIZE_REQD.toString(16)}`,
    ]);
    expect((await step(n, option({ kind: 'go', name: 'x', requests: [Info.BLOCK_SIZE] }))).next).toBe('transmit');
  });

  it('the open hook gives a device per connection; its failure is ERR_UNKNOWN with the reason', async () => {
    const opened: string[] = [];
    const n = await fixed(
      engine({
        open: ({ export: e }) => {
          opened.push(e.name);
          if (e.name === 'b') throw new Error('no disk');
          return new MemoryDevice(SIZE);
        },
      }),
    );
    const err = await step(n, option({ kind: 'go', name: 'b', requests: [] }));
    expect(err.send[0]).toMatchObject({
      reply: { kind: 'error', code: OptionReply.ERR_UNKNOWN, message: 'cannot open export "b": no disk' },
    });
    const go = await step(n, option({ kind: 'go', name: 'a', requests: [] }));
    expect(go).toMatchObject({ next: 'transmit', ownsDevice: true });
    expect(opened).toEqual(['b', 'a']);
  });

  it('after shutdown: ERR_SHUTDOWN for options, ABORT still acknowledged, EXPORT_NAME closes', async () => {
    const n = await fixed();
    n.shutdown();
    expect(replies(await step(n, option({ kind: 'list' })))).toEqual([`error ${OptionReply.ERR_SHUTDOWN.toString(16)}`]);
    expect((await step(n, option({ kind: 'export-name', name: 'a' }))).next).toBe('close');
    expect(replies(await step(n, option({ kind: 'abort' })))).toEqual(['ack']);
  });

  it('FORCEDTLS: ERR_TLS_REQD before STARTTLS, EXPORT_NAME closes; after it every state is forgotten', async () => {
    const n = await fixed(engine({ tls: 'require' }));
    expect(replies(await step(n, option({ kind: 'list' })))).toEqual([`error ${OptionReply.ERR_TLS_REQD.toString(16)}`]);
    expect(replies(await step(n, option({ kind: 'structured-reply' })))).toEqual([`error ${OptionReply.ERR_TLS_REQD.toString(16)}`]);
    expect(await step(n, option({ kind: 'starttls' }))).toMatchObject({ next: 'starttls', send: [{ reply: { kind: 'ack' } }] });
    n.afterTls({ protocol: 'TLSv1.3', cipher: 'x', psk: 'alice' });
    expect(replies(await step(n, option({ kind: 'starttls' })))).toEqual([`error ${OptionReply.ERR_INVALID.toString(16)}`]);
    expect(replies(await step(n, option({ kind: 'list' })))).toEqual(['server', 'server', 'ack']);
    const m = await fixed(engine({ tls: 'require' }));
    expect((await step(m, option({ kind: 'export-name', name: 'a' }))).next).toBe('close');
  });

  it('SELECTIVETLS: TLS-only exports are hidden and refused until TLS; negotiated state is forgotten by STARTTLS', async () => {
    const exports = [
      { name: 'open', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'secret', size: SIZE, device: new MemoryDevice(SIZE), tlsOnly: true },
    ];
    const n = await fixed(engine({ tls: 'on', exports }));
    expect(replies(await step(n, option({ kind: 'list' })))).toEqual(['server', 'ack']);
    expect(replies(await step(n, option({ kind: 'info', name: 'secret', requests: [] })))).toEqual([
      `error ${OptionReply.ERR_TLS_REQD.toString(16)}`,
    ]);
    expect(replies(await step(n, option({ kind: 'structured-reply' })))).toEqual(['ack']);
    n.afterTls({ protocol: 'TLSv1.3', cipher: 'x', subject: 'CN=c' });
    expect(replies(await step(n, option({ kind: 'list' })))).toEqual(['server', 'server', 'ack']);
    // Structured replies were negotiated before TLS: forgotten, so they can be negotiated again.
    expect(replies(await step(n, option({ kind: 'structured-reply' })))).toEqual(['ack']);
    const go = await step(n, option({ kind: 'go', name: 'secret', requests: [] }));
    expect(go.next).toBe('transmit');
    const m = await fixed(engine({ tls: 'on', exports }));
    expect((await step(m, option({ kind: 'export-name', name: 'secret' }))).next).toBe('close');
  });

  it('SELECTIVETLS before TLS: a TLS-only export and an unknown one get the same reply, word for word', async () => {
    const exports = [
      { name: 'open', size: SIZE, device: new MemoryDevice(SIZE) },
      { name: 'secret', size: SIZE, device: new MemoryDevice(SIZE), tlsOnly: true },
    ];
    /** The final reply to `kind` for export `name`, with the name taken out of the message. */
    const answer = async (kind: 'info' | 'go' | 'list-meta-context' | 'set-meta-context', name: string) => {
      const n = await fixed(engine({ tls: 'on', exports }));
      await step(n, option({ kind: 'structured-reply' }));
      const req: OptionRequest =
        kind === 'info' || kind === 'go' ? { kind, name, requests: [] } : { kind, name, queries: ['base:allocation'] };
      const last = (await step(n, option(req))).send.at(-1)!;
      const r = last.kind === 'option-reply' ? last.reply : undefined;
      return r?.kind === 'error' ? { code: r.code, message: r.message.replace(name, 'NAME') } : r?.kind;
    };
    for (const kind of ['info', 'go'] as const) {
      expect(await answer(kind, 'secret')).toEqual({ code: OptionReply.ERR_TLS_REQD, message: 'export "NAME" needs TLS, if it exists' });
      expect(await answer(kind, 'nosuch')).toEqual(await answer(kind, 'secret'));
    }
    // ERR_TLS_REQD is for INFO, GO and EXPORT_NAME only.
    for (const kind of ['list-meta-context', 'set-meta-context'] as const) {
      expect(await answer(kind, 'secret')).toEqual({ code: OptionReply.ERR_UNKNOWN, message: 'unknown export "NAME"' });
      expect(await answer(kind, 'nosuch')).toEqual(await answer(kind, 'secret'));
    }
  });

  it('an error quoting a 4096-byte name stays within the 4096 bytes an NBD string may have', async () => {
    const name = 'é'.repeat(2048);
    const s = await step(await fixed(), option({ kind: 'info', name, requests: [] }));
    const r = s.send[0]!.kind === 'option-reply' ? s.send[0]!.reply : undefined;
    expect(r?.kind === 'error' && r.code).toBe(OptionReply.ERR_UNKNOWN);
    expect(() => encodeOptionReply(Option.INFO, r!)).not.toThrow();
  });

  it(`gives up after ${MAX_OPTIONS} options`, async () => {
    const n = await fixed();
    let last: NegotiationStep | undefined;
    for (let i = 0; i <= MAX_OPTIONS; i++) last = await step(n, option({ kind: 'list' }));
    expect(last?.next).toBe('close');
  });
});
