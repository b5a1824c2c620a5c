// The transmission engine driven with plain values: request frames in, reply values out.

import { AllocationState, Command, CommandFlag, Errno, encodeBlockStatusPayload, NbdErrnoError, type Request } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import type { Device, DeviceExtent } from './device.js';
import { silentLogger } from './logger.js';
import { MemoryDevice } from './memory-device.js';
import type { Reply, ReplyOut } from './replies.js';
import { type Session, transmissionFlags } from './session.js';
import { TransmissionEngine } from './transmission-engine.js';

const SIZE = 1 << 20;

function session(device: Device, over: Partial<Session> = {}): Session {
  return {
    export: { name: '', size: SIZE, device },
    device,
    flags: transmissionFlags(device, false, true, false),
    blockSizes: { min: 1, preferred: 4096, max: 1 << 20 },
    structured: true,
    extended: false,
    metaContexts: new Map([[1, 'base:allocation']]),
    ...over,
  };
}

/** A ReplyOut that records replies and the read buffers handed out and given back. */
function recorder() {
  const sent: Reply[] = [];
  const buffers = { out: 0, discarded: 0 };
  const out: ReplyOut = {
    readBuffer: (n) => {
      buffers.out++;
      return new Uint8Array(n);
    },
    discard: () => buffers.discarded++,
    send: (r) => sent.push(r),
  };
  return { sent, buffers, out };
}

function setup(device: Device = new MemoryDevice(SIZE), over: Partial<Session> = {}) {
  const rec = recorder();
  const released: Uint8Array[] = [];
  let settled = 0;
  const engine = new TransmissionEngine(
    session(device, over),
    rec.out,
    { release: (p) => released.push(p), settled: () => settled++ },
    silentLogger,
    'test',
  );
  return { engine, ...rec, released, settled: () => settled };
}

const req = (type: number, offset: number, length: number, flags = 0, cookie = 1n): Request => ({
  type,
  flags,
  cookie,
  offset: BigInt(offset),
  length: BigInt(length),
});
const frame = (request: Request, payload?: Uint8Array) => ({ kind: 'request' as const, request, ...(payload ? { payload } : {}) });

describe('TransmissionEngine', () => {
  it('a synchronous device is answered within the call: WRITE then READ of the same bytes (lent, or read)', () => {
    const memory = new MemoryDevice(SIZE);
    const { engine, sent } = setup(memory);
    expect(engine.request(frame(req(Command.WRITE, 100, 3), Uint8Array.of(7, 8, 9)))).toBe('done');
    expect(engine.request(frame(req(Command.READ, 100, 3, 0, 2n)))).toBe('done');
    expect(sent[0]).toEqual({ kind: 'ok', cookie: 1n, offset: 100n });
    const lent = sent[1]!;
    if (lent.kind !== 'loan') throw new Error(`MemoryDevice lends its pages, got ${lent.kind}`);
    expect(Buffer.concat(lent.views)).toEqual(Buffer.from([7, 8, 9]));
    lent.release();
    const plain = setup({ readAt: (b, o) => memory.readAt(b, o) });
    plain.engine.request(frame(req(Command.READ, 100, 3, 0, 3n)));
    expect(plain.sent[0]).toMatchObject({ kind: 'data', cookie: 3n, offset: 100n, data: Uint8Array.of(7, 8, 9) });
    expect(engine.inFlight).toBe(0);
  });

  it('an asynchronous write holds its payload until the device settles, and counts it in flight', async () => {
    const device = new MemoryDevice(SIZE);
    let finish!: () => void;
    const slow: Device = { readAt: (b, o) => device.readAt(b, o), writeAt: () => new Promise<void>((r) => (finish = r)) };
    const { engine, sent, released } = setup(slow);
    const payload = new Uint8Array(10);
    expect(engine.request(frame(req(Command.WRITE, 0, 10), payload))).toBe('held');
    expect(engine.inFlight).toBe(1);
    expect(engine.inFlightBytes).toBe(10);
    finish();
    await new Promise((r) => setImmediate(r));
    expect(released).toEqual([payload]);
    expect(sent).toEqual([{ kind: 'ok', cookie: 1n, offset: 0n }]);
    expect(engine.inFlight).toBe(0);
  });

  it('a failed read answers with the errno and gives its read buffer back', async () => {
    const failing: Device = { readAt: () => Promise.reject(new NbdErrnoError(Errno.EIO, 'bad sector')) };
    const { engine, sent, buffers } = setup(failing);
    engine.request(frame(req(Command.READ, 0, 4096)));
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([{ kind: 'error', cookie: 1n, offset: 0n, type: Command.READ, errno: Errno.EIO, message: 'bad sector' }]);
    expect(buffers).toEqual({ out: 1, discarded: 1 });
  });

  it('invalid requests are answered without touching the device', () => {
    const { engine, sent } = setup(new MemoryDevice(SIZE), { flags: transmissionFlags(new MemoryDevice(SIZE), true, true, false) });
    engine.request(frame(req(Command.WRITE, 0, 1), Uint8Array.of(1)));
    engine.request(frame(req(Command.TRIM, 0, 1, 0, 2n)));
    engine.request(frame(req(Command.READ, SIZE, 1, 0, 3n)));
    expect(sent.map((r) => (r.kind === 'error' ? r.errno : r.kind))).toEqual([Errno.EPERM, Errno.EPERM, Errno.EINVAL]);
  });

  it('a sparse read of 64 KiB or more becomes data and hole segments', () => {
    const device = new MemoryDevice(SIZE);
    device.writeAt(new Uint8Array(32 * 1024).fill(1), 64 * 1024);
    const { engine, sent } = setup(device);
    engine.request(frame(req(Command.READ, 0, 128 * 1024)));
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        const r = sent[0]!;
        if (r.kind !== 'segments') throw new Error(`expected segments, got ${r.kind}`);
        expect(r.segments.map((s) => ('hole' in s ? `hole ${s.offset}+${s.hole}` : `data ${s.offset}+${s.data.length}`))).toEqual([
          'hole 0+65536',
          'data 65536+32768',
          'hole 98304+32768',
        ]);
        resolve();
      }),
    );
  });

  it('BLOCK_STATUS clips, merges and caps extents; REQ_ONE gives one', () => {
    const extents: DeviceExtent[] = [
      { length: 4096, flags: 0 },
      { length: 4096, flags: 0 },
      { length: 8192, flags: AllocationState.HOLE },
      { length: 1 << 30, flags: 0 },
    ];
    const device: Device = { readAt: () => {}, extents: () => extents };
    const { engine, sent } = setup(device);
    engine.request(frame(req(Command.BLOCK_STATUS, 0, 20_000)));
    engine.request(frame(req(Command.BLOCK_STATUS, 0, 20_000, CommandFlag.REQ_ONE, 2n)));
    expect(sent[0]).toMatchObject({
      kind: 'block-status',
      contextIds: [1],
      extents: [
        { length: 8192, flags: 0 },
        { length: 8192, flags: 1 },
        { length: 3616, flags: 0 },
      ],
    });
    expect(sent[1]).toMatchObject({ kind: 'block-status', extents: [{ length: 8192, flags: 0 }] });
  });

  it('an extended BLOCK_STATUS payload picks the effect length and the contexts', () => {
    const device: Device = { readAt: () => {}, extents: (_o, l) => [{ length: l, flags: 0 }] };
    const { engine, sent } = setup(device, { extended: true, flags: transmissionFlags(new MemoryDevice(1), false, true, true) });
    const payload = encodeBlockStatusPayload({ effectLength: 5000n, contextIds: [1] });
    engine.request(frame(req(Command.BLOCK_STATUS, 0, payload.length, CommandFlag.PAYLOAD_LEN), payload));
    const unknown = encodeBlockStatusPayload({ effectLength: 5000n, contextIds: [9] });
    engine.request(frame(req(Command.BLOCK_STATUS, 0, unknown.length, CommandFlag.PAYLOAD_LEN, 2n), unknown));
    expect(sent[0]).toMatchObject({ kind: 'block-status', contextIds: [1], extents: [{ length: 5000, flags: 0 }] });
    expect(sent[1]).toMatchObject({ kind: 'error', errno: Errno.EINVAL, message: 'meta context 9 was not selected' });
  });

  it('FUA on a device without native FUA syncs after the write', () => {
    const calls: string[] = [];
    const device: Device = { readAt: () => {}, writeAt: () => void calls.push('write'), sync: () => void calls.push('sync') };
    const { engine, sent } = setup(device, { flags: transmissionFlags(device, false, true, false) });
    engine.request(frame(req(Command.WRITE, 0, 1, CommandFlag.FUA), Uint8Array.of(1)));
    expect(calls).toEqual(['write', 'sync']);
    expect(sent).toEqual([{ kind: 'ok', cookie: 1n, offset: 0n }]);
  });

  it('shutdown answers in-flight and new requests with ESHUTDOWN; DISC stops further requests', async () => {
    let finish!: () => void;
    const device: Device = { readAt: () => new Promise<void>((r) => (finish = r)) };
    const { engine, sent, buffers } = setup(device);
    engine.request(frame(req(Command.READ, 0, 10)));
    engine.shutdown();
    engine.request(frame(req(Command.READ, 0, 10, 0, 2n)));
    finish();
    await new Promise((r) => setImmediate(r));
    expect(sent.map((r) => (r.kind === 'error' ? `${r.cookie} ${r.errno}` : r.kind))).toEqual([
      `2 ${Errno.ESHUTDOWN}`,
      `1 ${Errno.ESHUTDOWN}`,
    ]);
    expect(buffers.discarded).toBe(1);
    expect(engine.request(frame(req(Command.DISC, 0, 0)))).toBe('disconnect');
    expect(engine.request(frame(req(Command.READ, 0, 10, 0, 3n)))).toBe('done');
    expect(sent).toHaveLength(2); // nothing after DISC
  });

  it('device errors map to the spec errnos: Node codes, NbdErrnoError, anything else EIO', async () => {
    const errors: unknown[] = [Object.assign(new Error('full'), { code: 'ENOSPC' }), new NbdErrnoError(Errno.EPERM), 'weird'];
    const device: Device = { readAt: () => {}, writeAt: () => Promise.reject(errors.shift()) };
    const { engine, sent } = setup(device);
    for (let i = 0; i < 3; i++) engine.request(frame(req(Command.WRITE, 0, 1, 0, BigInt(i)), Uint8Array.of(1)));
    await new Promise((r) => setImmediate(r));
    expect(sent.map((r) => (r.kind === 'error' ? r.errno : r.kind))).toEqual([Errno.ENOSPC, Errno.EPERM, Errno.EIO]);
  });

  it('an errno the protocol does not define (ENOENT, 0) goes out as EIO', async () => {
    const errors = [new NbdErrnoError(2), new NbdErrnoError(0)];
    const device: Device = { readAt: () => {}, writeAt: () => Promise.reject(errors.shift()) };
    const { engine, sent } = setup(device);
    for (let i = 0; i < 2; i++) engine.request(frame(req(Command.WRITE, 0, 1, 0, BigInt(i)), Uint8Array.of(1)));
    await new Promise((r) => setImmediate(r));
    expect(sent.map((r) => (r.kind === 'error' ? r.errno : r.kind))).toEqual([Errno.EIO, Errno.EIO]);
  });

  it('WRITE_ZEROES on a device without zero: writes of 1 MiB of zeroes at most, one at a time, then one reply', async () => {
    const size = 3 * SIZE + 5;
    const writes: [number, number][] = [];
    let busy = false;
    const device: Device = {
      readAt: () => {},
      writeAt: async (b, at) => {
        expect(busy || b.some((x) => x !== 0)).toBe(false);
        busy = true;
        writes.push([at, b.length]);
        await new Promise((r) => setImmediate(r));
        busy = false;
      },
    };
    const { engine, sent } = setup(device, { export: { name: '', size, device } });
    engine.request(frame(req(Command.WRITE_ZEROES, 7, size - 7)));
    while (sent.length === 0) await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([
      [7, SIZE],
      [7 + SIZE, SIZE],
      [7 + 2 * SIZE, SIZE - 2],
    ]);
    expect(sent.map((r) => r.kind)).toEqual(['ok']);
  });
});
