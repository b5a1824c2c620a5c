// The stream decoders fed every framed fixture, split at every byte offset, byte
// by byte, and as one chunk with several frames: the frames must come out the same.
import { describe, expect, test } from 'vitest';
import { ByteQueue } from './byte-queue.js';
import { concat } from './bytes.js';
import { decodeChunkHeader } from './chunks.js';
import { Command, CommandFlag, Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { clientFlags, exportNameReplies, greetings, optionReplies, optionRequests } from './fixtures/handshake.js';
import { chunks, requests, simpleReplies } from './fixtures/transmission.js';
import { type ClientFrame, ClientStreamDecoder, type ServerFrame, ServerStreamDecoder } from './frames.js';
import { encodeOptionRequest } from './handshake.js';
import { encodeRequest } from './transmission.js';

interface Decoder<F> {
  push(chunk: Uint8Array): void;
  next(): F | undefined;
  readonly buffered: number;
}

/** One frame of a conversation; `setup` runs just before the decoder is asked for it (the owner switching phases). */
interface Step<D, F> {
  bytes: Uint8Array;
  frame: F;
  setup?: (d: D) => void;
}

/** Cuts `bytes` at the given offsets. */
function cut(bytes: Uint8Array, at: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const k of [...at, bytes.length]) {
    out.push(bytes.slice(prev, k)); // slice, not subarray: each piece its own buffer, like sockets give
    prev = k;
  }
  return out;
}

function run<D extends Decoder<F>, F>(make: () => D, steps: Step<D, F>[], pieces: Uint8Array[]): F[] {
  const d = make();
  steps[0]?.setup?.(d);
  const frames: F[] = [];
  for (const p of pieces) {
    d.push(p);
    for (;;) {
      const f = d.next();
      if (f === undefined) break;
      frames.push(f);
      steps[frames.length]?.setup?.(d);
    }
  }
  expect(d.buffered).toBe(0);
  return frames;
}

/** Feeds the steps' bytes as one chunk, byte by byte, and split in two at every offset. */
function checkAllSplits<D extends Decoder<F>, F>(make: () => D, steps: Step<D, F>[]): void {
  const all = concat(steps.map((s) => s.bytes));
  const expected = steps.map((s) => s.frame);
  expect(run(make, steps, [all])).toEqual(expected);
  expect(
    run(
      make,
      steps,
      cut(
        all,
        Array.from({ length: all.length - 1 }, (_, i) => i + 1),
      ),
    ),
  ).toEqual(expected);
  for (let k = 0; k <= all.length; k++) {
    const got = run(make, steps, cut(all, [k]));
    if (got.length !== expected.length) throw new Error(`split at ${k}: ${got.length} frames, expected ${expected.length}`);
    expect(got).toEqual(expected);
  }
}

// ----------------------------------------------------------- client → server

type CStep = Step<ClientStreamDecoder, ClientFrame>;
const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

const clientFlagSteps: CStep[] = clientFlags.map((f) => ({ bytes: f.bytes, frame: { kind: 'client-flags', flags: f.value } }));
const optionSteps: CStep[] = optionRequests.map((f) => ({
  bytes: f.bytes,
  frame: { kind: 'option', option: view(f.bytes).getUint32(8), data: f.bytes.subarray(Size.OPTION_HEADER) },
  setup: (d) => d.startOptions(),
}));
const requestSteps: CStep[] = requests.map((f) => ({
  bytes: f.bytes,
  frame: { kind: 'request', request: f.value.request, ...(f.value.payload ? { payload: f.value.payload } : {}) },
  setup: (d) => {
    d.startTransmission(f.value.extended);
  },
}));

describe('ClientStreamDecoder', () => {
  test.each([...clientFlagSteps, ...optionSteps, ...requestSteps].map((s, i) => [i, s] as const))(
    'fixture %i at every split',
    (_i, step) => {
      checkAllSplits(() => new ClientStreamDecoder(), [step]);
    },
  );

  test('a whole conversation: flags → options → compact requests → extended requests', () => {
    const compact = requestSteps.filter((_, i) => !requests[i]!.value.extended);
    const extended = requestSteps.filter((_, i) => requests[i]!.value.extended);
    const steps: CStep[] = [
      clientFlagSteps[0]!,
      ...optionSteps.map((s) => ({ ...s, setup: undefined })), // 'options' must follow the flags by itself
      ...compact.map((s, i) => ({ ...s, setup: i === 0 ? (d: ClientStreamDecoder) => d.startTransmission(false) : undefined })),
      ...extended.map((s, i) => ({ ...s, setup: i === 0 ? (d: ClientStreamDecoder) => d.startTransmission(true) : undefined })),
    ];
    checkAllSplits(() => new ClientStreamDecoder(), steps);
  });

  test('phase moves to options by itself after the client flags', () => {
    const d = new ClientStreamDecoder();
    expect(d.phase).toBe('client-flags');
    d.push(concat([clientFlags[0]!.bytes, optionRequests[0]!.bytes]));
    expect(d.next()).toEqual({ kind: 'client-flags', flags: 3 });
    expect(d.phase).toBe('options');
    expect(d.next()?.kind).toBe('option');
    expect(d.next()).toBeUndefined();
  });

  test('a WRITE payload arriving slowly: midFrame and no frame until it is whole', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(false);
    const write = requests.find((f) => f.name.startsWith('compact WRITE'))!.bytes;
    d.push(write.subarray(0, Size.REQUEST + 1));
    expect(d.next()).toBeUndefined();
    expect(d.midFrame).toBe(true);
    d.push(write.subarray(Size.REQUEST + 1));
    expect(d.next()).toMatchObject({ kind: 'request', payload: Uint8Array.of(0xde, 0xad, 0xbe, 0xef) });
    expect(d.midFrame).toBe(false);
  });

  describe('oversized WRITE is drained, and the stream stays in sync', () => {
    const big = { flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 100n };
    const read = { flags: 0, type: Command.READ, cookie: 2n, offset: 0n, length: 512n };
    const payload = new Uint8Array(100).fill(7);

    test('compact', () => {
      const steps: CStep[] = [
        { bytes: concat([encodeRequest(big), payload]), frame: { kind: 'request', request: big, oversized: true } },
        { bytes: encodeRequest(read), frame: { kind: 'request', request: read } },
      ];
      checkAllSplits(() => {
        const d = new ClientStreamDecoder({ maxPayload: 8 });
        d.startTransmission(false);
        return d;
      }, steps);
    });

    test('extended, PAYLOAD_LEN', () => {
      const ext = { ...big, flags: CommandFlag.PAYLOAD_LEN };
      const steps: CStep[] = [
        { bytes: concat([encodeRequest(ext, true), payload]), frame: { kind: 'request', request: ext, oversized: true } },
        { bytes: encodeRequest(read, true), frame: { kind: 'request', request: read } },
      ];
      checkAllSplits(() => {
        const d = new ClientStreamDecoder({ maxPayload: 99 });
        d.startTransmission(true);
        return d;
      }, steps);
    });

    test('the oversized frame comes at once; midFrame stays true while draining', () => {
      const d = new ClientStreamDecoder({ maxPayload: 8 });
      d.startTransmission(false);
      d.push(encodeRequest(big));
      expect(d.next()).toEqual({ kind: 'request', request: big, oversized: true });
      expect(d.midFrame).toBe(true);
      d.push(payload.subarray(0, 60));
      expect(d.next()).toBeUndefined();
      expect(d.buffered).toBe(0);
      d.push(concat([payload.subarray(60), encodeRequest(read)]));
      expect(d.next()).toEqual({ kind: 'request', request: read });
      expect(d.midFrame).toBe(false);
    });
  });

  test('a WRITE at exactly maxPayload is buffered, not drained', () => {
    const d = new ClientStreamDecoder({ maxPayload: 4 });
    d.startTransmission(false);
    d.push(requests.find((f) => f.name.startsWith('compact WRITE'))!.bytes);
    expect(d.next()).toMatchObject({ kind: 'request', payload: Uint8Array.of(0xde, 0xad, 0xbe, 0xef) });
  });

  test('compact requests other than WRITE carry no payload, whatever their length', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(false);
    const trim = { flags: 0, type: Command.TRIM, cookie: 1n, offset: 0n, length: 0xffffffffn };
    d.push(encodeRequest(trim));
    expect(d.next()).toEqual({ kind: 'request', request: trim });
  });

  test('extended WRITE without PAYLOAD_LEN still carries its payload (qemu 10 sends these; docs/interop.md)', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(true);
    const w = { flags: CommandFlag.FUA, type: Command.WRITE, cookie: 1n, offset: 0n, length: 4n };
    d.push(encodeRequest(w, true));
    expect(d.wanted).toBe(4);
    expect(d.next()).toBeUndefined();
    d.push(Uint8Array.of(1, 2, 3, 4));
    expect(d.next()).toEqual({ kind: 'request', request: w, payload: Uint8Array.of(1, 2, 3, 4) });
  });

  test('after STARTTLS, drain() hands over the bytes buffered beyond the option', () => {
    const d = new ClientStreamDecoder();
    d.startOptions();
    d.push(concat([encodeOptionRequest({ kind: 'starttls' }), Uint8Array.of(0x16, 0x03, 0x01)]));
    expect(d.next()).toEqual({ kind: 'option', option: 5, data: new Uint8Array(0) });
    expect(d.drain()).toEqual(Uint8Array.of(0x16, 0x03, 0x01));
    expect(d.buffered).toBe(0);
  });

  test.each(requestSteps.map((s, i) => [i, s] as const))('wanted counts down to the end of request fixture %i', (_i, step) => {
    const d = new ClientStreamDecoder();
    step.setup?.(d);
    const header = d.extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
    let got: ClientFrame | undefined;
    for (let k = 0; k < step.bytes.length && got === undefined; k++) {
      // The header until it is whole, then header and payload.
      expect(d.wanted).toBe(k < header ? header - k : step.bytes.length - k);
      d.push(step.bytes.subarray(k, k + 1));
      got = d.next();
    }
    expect(got).toEqual(step.frame);
    expect(d.wanted).toBe(header);
  });

  test('wanted sees a whole header not yet taken, and counts a payload even before next()', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(false);
    const w = { flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 100n };
    d.push(concat([encodeRequest(w), new Uint8Array(30)]));
    expect(d.wanted).toBe(70);
    expect(d.next()).toBeUndefined();
    expect(d.wanted).toBe(70);
  });

  test('wanted is 0 outside transmission, for a header claiming more than maxPayload, and while draining', () => {
    const d = new ClientStreamDecoder({ maxPayload: 8 });
    expect(d.wanted).toBe(0);
    d.startOptions();
    expect(d.wanted).toBe(0);
    d.startTransmission(false);
    const big = { flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: 100n };
    d.push(encodeRequest(big));
    expect(d.wanted).toBe(0);
    expect(d.next()).toEqual({ kind: 'request', request: big, oversized: true });
    d.push(new Uint8Array(40));
    expect(d.wanted).toBe(0);
    expect(d.next()).toBeUndefined();
    d.push(new Uint8Array(60));
    expect(d.next()).toBeUndefined();
    expect(d.wanted).toBe(Size.REQUEST);
  });

  test('extended: a payload counts for WRITE and with PAYLOAD_LEN, and a u64 length past 2^53 is still too large', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(true);
    const w = { flags: CommandFlag.PAYLOAD_LEN, type: Command.WRITE, cookie: 1n, offset: 0n, length: 4n };
    const trim = { flags: 0, type: Command.TRIM, cookie: 2n, offset: 0n, length: 4n };
    d.push(encodeRequest(trim, true));
    expect(d.wanted).toBe(0);
    expect(d.next()).toEqual({ kind: 'request', request: trim });
    d.push(encodeRequest(w, true));
    expect(d.wanted).toBe(4);
    const huge = { ...w, length: 2n ** 64n - 1n };
    const e = new ClientStreamDecoder();
    e.startTransmission(true);
    e.push(encodeRequest(huge, true));
    expect(e.wanted).toBe(0);
    expect(() => e.next()).toThrow(/too large to drain/);
  });

  test('reads landing one after another in one buffer give the payload as a view of it, not a copy', () => {
    // As a socket reader filling an arena does: every read a subarray right after the previous one.
    const arena = new Uint8Array(4096);
    const w = { flags: 0, type: Command.WRITE, cookie: 7n, offset: 0n, length: 1000n };
    const bytes = concat([encodeRequest(w), new Uint8Array(1000).fill(9)]);
    arena.set(bytes, 100);
    const d = new ClientStreamDecoder();
    d.startTransmission(false);
    for (let pos = 100; pos < 100 + bytes.length; pos += 97) d.push(arena.subarray(pos, Math.min(pos + 97, 100 + bytes.length)));
    const f = d.next();
    if (f?.kind !== 'request' || f.payload === undefined) throw new Error('no payload');
    expect(f.payload.buffer).toBe(arena.buffer);
    expect(f.payload.byteOffset).toBe(100 + Size.REQUEST);
    expect(f.payload).toEqual(new Uint8Array(1000).fill(9));
  });

  test('drain() mid-payload and pushing the bytes back (moved elsewhere) resumes the request', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(false);
    const w = { flags: 0, type: Command.WRITE, cookie: 7n, offset: 0n, length: 10n };
    const payload = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    d.push(concat([encodeRequest(w), payload.subarray(0, 4)]));
    expect(d.next()).toBeUndefined();
    const moved = new Uint8Array(64);
    const rest = d.drain();
    expect(rest).toEqual(payload.subarray(0, 4));
    moved.set(rest);
    moved.set(payload.subarray(4), 4);
    expect(d.wanted).toBe(10);
    d.push(moved.subarray(0, 4));
    expect(d.wanted).toBe(6);
    d.push(moved.subarray(4, 10));
    const f = d.next();
    expect(f).toEqual({ kind: 'request', request: w, payload });
    expect(f?.kind === 'request' && f.payload?.buffer).toBe(moved.buffer);
  });

  test('a compact request when extended headers are on is a bad magic', () => {
    const d = new ClientStreamDecoder();
    d.startTransmission(true);
    d.push(encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0n, length: 1n }));
    d.push(new Uint8Array(4));
    expect(() => d.next()).toThrow(ProtocolError);
  });
});

// ----------------------------------------------------------- server → client

type SStep = Step<ServerStreamDecoder, ServerFrame>;

const greetingSteps: SStep[] = greetings.map((f) => ({ bytes: f.bytes, frame: { kind: 'greeting', greeting: f.value } }));
const optionReplySteps: SStep[] = optionReplies.map((f) => {
  const v = view(f.bytes);
  return {
    bytes: f.bytes,
    frame: { kind: 'option-reply', option: v.getUint32(8), type: v.getUint32(12), data: f.bytes.subarray(Size.OPTION_REPLY_HEADER) },
    setup: (d) => d.startOptions(),
  };
});
const exportNameSteps: SStep[] = exportNameReplies.map((f) => ({
  bytes: f.bytes,
  frame: { kind: 'export-name-reply', ...f.value.reply },
  setup: (d) => {
    d.expectExportNameReply(f.value.noZeroes);
  },
}));
// The READ fixture's cookie is 1 and its data 4 bytes; the decoder must be told.
const readLength = (cookie: bigint) => (cookie === 1n ? 4 : undefined);
const simpleSteps: SStep[] = simpleReplies.map((f) => ({
  bytes: f.bytes,
  frame: { kind: 'simple-reply', ...f.value.reply, ...(f.value.data ? { data: f.value.data } : {}) },
  setup: (d) => {
    d.startTransmission(false);
    d.readLength = readLength;
  },
}));
const chunkSteps: SStep[] = chunks.map((f) => {
  const size = f.value.extended ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
  const { extended: _, ...header } = decodeChunkHeader(f.bytes.subarray(0, size));
  return {
    bytes: f.bytes,
    frame: { kind: 'chunk', header, payload: f.bytes.subarray(size) },
    setup: (d) => {
      d.startTransmission(f.value.extended);
    },
  };
});

describe('ServerStreamDecoder', () => {
  test.each([...greetingSteps, ...optionReplySteps, ...exportNameSteps, ...simpleSteps, ...chunkSteps].map((s, i) => [i, s] as const))(
    'fixture %i at every split',
    (_i, step) => {
      checkAllSplits(() => new ServerStreamDecoder(), [step]);
    },
  );

  test.each([...simpleSteps, ...chunkSteps].map((s, i) => [i, s] as const))(
    'wanted counts down to the end of reply fixture %i',
    (_i, step) => {
      const d = new ServerStreamDecoder();
      step.setup?.(d);
      let got: ServerFrame | undefined;
      for (let k = 0; k < step.bytes.length && got === undefined; k++) {
        // The smallest header until the magic is in, then this header, then the rest of the frame.
        const header = step.frame.kind === 'simple-reply' ? 16 : d.extended ? 32 : 20;
        expect(d.wanted).toBe(k < 4 ? (d.extended ? 32 : 16) - k : k < header ? header - k : step.bytes.length - k);
        d.push(step.bytes.subarray(k, k + 1));
        got = d.next();
      }
      expect(got).toEqual(step.frame);
      expect(d.wanted).toBe(d.extended ? 32 : 16);
    },
  );

  test('wanted is 0 outside transmission and for a chunk claiming more than maxChunk', () => {
    const d = new ServerStreamDecoder();
    expect(d.wanted).toBe(0);
    d.startTransmission(false);
    d.maxChunk = 3;
    d.push(chunkSteps[1]!.bytes.subarray(0, 20)); // OFFSET_DATA header, length 12
    expect(d.wanted).toBe(0);
    expect(() => d.next()).toThrow(ProtocolError);
  });

  test('newstyle: greeting → option replies → EXPORT_NAME reply → simple and structured replies', () => {
    const steps: SStep[] = [
      greetingSteps[1]!,
      ...optionReplySteps.map((s) => ({ ...s, setup: undefined })), // options follow a newstyle greeting by themselves
      { ...exportNameSteps[1]!, setup: (d) => d.expectExportNameReply(true) },
      ...simpleSteps.map((s, i) => ({ ...s, setup: i === 0 ? (d: ServerStreamDecoder) => (d.readLength = readLength) : undefined })),
      ...chunkSteps.filter((_, i) => !chunks[i]!.value.extended).map((s) => ({ ...s, setup: undefined })),
    ];
    checkAllSplits(() => new ServerStreamDecoder(), steps);
  });

  test('newstyle with GO: option replies, then extended chunks once the owner says so', () => {
    const steps: SStep[] = [
      greetingSteps[1]!,
      optionReplySteps[0]!, // ACK to GO
      ...chunkSteps.filter((_, i) => chunks[i]!.value.extended).map((s, i) => ({ ...s, setup: i === 0 ? s.setup : undefined })),
    ];
    checkAllSplits(() => new ServerStreamDecoder(), steps);
  });

  test('oldstyle goes straight to transmission', () => {
    const steps: SStep[] = [
      greetingSteps[0]!,
      ...simpleSteps.map((s, i) => ({ ...s, setup: i === 0 ? (d: ServerStreamDecoder) => (d.readLength = readLength) : undefined })),
    ];
    checkAllSplits(() => new ServerStreamDecoder(), steps);
    const d = new ServerStreamDecoder();
    d.push(greetings[0]!.bytes);
    d.next();
    expect(d.phase).toBe('transmission');
  });

  test('EXPORT_NAME reply moves to transmission by itself', () => {
    const d = new ServerStreamDecoder();
    d.expectExportNameReply(false);
    d.push(exportNameReplies[0]!.bytes);
    expect(d.next()?.kind).toBe('export-name-reply');
    expect(d.phase).toBe('transmission');
  });

  test('a READ that failed carries no data even though readLength knows the cookie', () => {
    const d = new ServerStreamDecoder();
    d.startTransmission(false);
    d.readLength = () => 4;
    d.push(simpleReplies[2]!.bytes);
    expect(d.next()).toEqual({ kind: 'simple-reply', error: 5, cookie: 3n });
    expect(d.buffered).toBe(0);
  });

  test('a simple reply after extended headers is a ProtocolError', () => {
    const d = new ServerStreamDecoder();
    d.startTransmission(true);
    d.push(simpleReplies[1]!.bytes);
    expect(() => d.next()).toThrow(/extended/);
  });

  test('a structured chunk after extended headers, and an extended one without, are ProtocolErrors', () => {
    const a = new ServerStreamDecoder();
    a.startTransmission(true);
    a.push(chunks[0]!.bytes);
    expect(() => a.next()).toThrow(ProtocolError);
    const b = new ServerStreamDecoder();
    b.startTransmission(false);
    b.push(chunks.find((c) => c.value.extended)!.bytes);
    expect(() => b.next()).toThrow(ProtocolError);
  });
});

// ---------------------------------------------------------------- ByteQueue

describe('ByteQueue', () => {
  const q3 = () => {
    const q = new ByteQueue();
    q.push(Uint8Array.of(1, 2));
    q.push(new Uint8Array(0)); // ignored
    q.push(Uint8Array.of(3));
    q.push(Uint8Array.of(4, 5, 6));
    return q;
  };

  test('empty queue', () => {
    const q = new ByteQueue();
    expect(q.length).toBe(0);
    expect(q.take(0)).toEqual(new Uint8Array(0));
    expect(q.peek(0)).toEqual(new Uint8Array(0));
    expect(q.skip(5)).toBe(0);
    expect(q.drain()).toEqual(new Uint8Array(0));
  });

  test('peek across chunks copies and does not consume', () => {
    const q = q3();
    expect(q.length).toBe(6);
    expect(q.peek(4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    expect(q.peek(6)).toEqual(Uint8Array.of(1, 2, 3, 4, 5, 6));
    expect(q.length).toBe(6);
  });

  test('take within one chunk is a view, not a copy', () => {
    const chunk = Uint8Array.of(9, 8, 7, 6);
    const q = new ByteQueue();
    q.push(chunk);
    const t = q.take(2);
    expect(t.buffer).toBe(chunk.buffer);
    expect(t).toEqual(Uint8Array.of(9, 8));
    expect(q.take(2)).toEqual(Uint8Array.of(7, 6));
    expect(q.length).toBe(0);
  });

  test('take across three chunks, then the rest of a partly read chunk', () => {
    const q = q3();
    expect(q.take(1)).toEqual(Uint8Array.of(1));
    expect(q.take(4)).toEqual(Uint8Array.of(2, 3, 4, 5));
    expect(q.length).toBe(1);
    expect(q.peek(1)).toEqual(Uint8Array.of(6));
    expect(q.take(1)).toEqual(Uint8Array.of(6));
    expect(q.length).toBe(0);
  });

  test('skip at chunk boundaries and past the end', () => {
    const q = q3();
    expect(q.skip(2)).toBe(2); // exactly the first chunk
    expect(q.take(1)).toEqual(Uint8Array.of(3));
    expect(q.skip(100)).toBe(3);
    expect(q.length).toBe(0);
    q.push(Uint8Array.of(42));
    expect(q.drain()).toEqual(Uint8Array.of(42));
  });

  test('adjacent views of one buffer (reads into an arena) merge: a take across them is a view', () => {
    const arena = Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    const q = new ByteQueue();
    q.push(arena.subarray(1, 3));
    q.push(arena.subarray(3, 4));
    q.push(arena.subarray(4, 8));
    const t = q.take(6);
    expect(t).toEqual(Uint8Array.of(1, 2, 3, 4, 5, 6));
    expect(t.buffer).toBe(arena.buffer); // no copy
    expect(t.byteOffset).toBe(1);
    // Not adjacent (a gap, or another buffer): kept apart, bytes still right.
    q.push(arena.subarray(9, 10));
    q.push(Uint8Array.of(7));
    expect(q.drain()).toEqual(Uint8Array.of(7, 9, 7));
  });
});
