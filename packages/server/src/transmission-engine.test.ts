// The transmission engine driven with plain values: request frames in, reply values out;
// every payload lease and READ buffer lease it takes ends exactly once.

import { AllocationState, Command, CommandFlag, Errno, encodeBlockStatusPayload, NbdErrnoError, type Request } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { Budget } from './budget.js';
import type { Device, DeviceExtent } from './device.js';
import { silentLogger } from './logger.js';
import { MemoryDevice } from './memory-device.js';
import type { Reply, ReplyOut } from './replies.js';
import { type ReadLease, ReplyBuffers } from './reply-buffers.js';
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

/** A ReplyOut that records replies and the READ buffer leases it handed out. */
function recorder() {
  const sent: Reply[] = [];
  const leases: ReadLease[] = [];
  const pool = new ReplyBuffers(1 << 30);
  const out: ReplyOut = {
    readLease: (n) => {
      const lease = pool.lease(0, n);
      leases.push(lease);
      return lease;
    },
    send: (r) => sent.push(r),
  };
  /** Leases still out that no reply carries (a leak). */
  const leaked = () => {
    const carried = new Set(
      sent.flatMap((r) =>
        r.kind === 'data' ? [r.lease] : r.kind === 'segments' ? r.segments.flatMap((s) => ('lease' in s ? [s.lease] : [])) : [],
      ),
    );
    return leases.filter((l) => l.out && !carried.has(l)).length;
  };
  return { sent, leases, leaked, out };
}

function setup(device: Device = new MemoryDevice(SIZE), over: Partial<Session> = {}) {
  const rec = recorder();
  let changes = 0;
  const budget = new Budget({ maxInFlight: 1000, maxInFlightBytes: 1 << 30 }, { pinnedBytes: 0 }, { writableLength: 0 }, () => changes++);
  const engine = new TransmissionEngine(session(device, over), rec.out, budget, silentLogger, 'test');
  return { engine, budget, ...rec, changes: () => changes };
}

/** A payload lease that records how often it was released. */
function payloadLease(bytes: Uint8Array) {
  const lease = { bytes, releases: 0, release: () => void lease.releases++ };
  return lease;
}

const req = (type: number, offset: number, length: number, flags = 0, cookie = 1n): Request => ({
  type,
  flags,
  cookie,
  offset: BigInt(offset),
  length: BigInt(length),
});
const frame = (request: Request, payload?: Uint8Array | ReturnType<typeof payloadLease>) => ({
  request,
  payload: payload instanceof Uint8Array ? payloadLease(payload) : payload,
});

describe('TransmissionEngine', () => {
  it('a synchronous device is answered within the call: WRITE then READ of the same bytes (lent, or read)', () => {
    const memory = new MemoryDevice(SIZE);
    const { engine, sent, budget } = setup(memory);
    const payload = payloadLease(Uint8Array.of(7, 8, 9));
    expect(engine.request(frame(req(Command.WRITE, 100, 3), payload))).toBe('next');
    expect(payload.releases).toBe(1); // the device copied it: released at once
    expect(engine.request(frame(req(Command.READ, 100, 3, 0, 2n)))).toBe('next');
    expect(sent[0]).toEqual({ kind: 'ok', cookie: 1n, offset: 100n });
    const lent = sent[1]!;
    if (lent.kind !== 'loan') throw new Error(`MemoryDevice lends its pages, got ${lent.kind}`);
    expect(Buffer.concat(lent.views)).toEqual(Buffer.from([7, 8, 9]));
    lent.release();
    const plain = setup({ readAt: (b, o) => memory.readAt(b, o) });
    plain.engine.request(frame(req(Command.READ, 100, 3, 0, 3n)));
    const data = plain.sent[0]!;
    if (data.kind !== 'data') throw new Error(`expected data, got ${data.kind}`);
    expect(data).toMatchObject({ cookie: 3n, offset: 100n });
    expect([...data.lease.data]).toEqual([7, 8, 9]);
    expect(data.lease.out).toBe(true); // the writer's now
    expect(budget.requests).toBe(0);
  });

  it('an asynchronous write holds its payload lease until the device settles, and counts it in flight', async () => {
    const device = new MemoryDevice(SIZE);
    let finish!: () => void;
    const slow: Device = { readAt: (b, o) => device.readAt(b, o), writeAt: () => new Promise<void>((r) => (finish = r)) };
    const { engine, sent, budget, changes } = setup(slow);
    const payload = payloadLease(new Uint8Array(10));
    expect(engine.request(frame(req(Command.WRITE, 0, 10), payload))).toBe('next');
    expect(payload.releases).toBe(0);
    expect([budget.requests, budget.bytes]).toEqual([1, 10]);
    finish();
    await new Promise((r) => setImmediate(r));
    expect(payload.releases).toBe(1);
    expect(sent).toEqual([{ kind: 'ok', cookie: 1n, offset: 0n }]);
    expect([budget.requests, budget.bytes, changes()]).toEqual([0, 0, 1]);
  });

  it('every payload lease ends exactly once: refused, failed, read, or after DISC', async () => {
    const failures: (() => Promise<void>)[] = [
      () => {
        throw new Error('sync failure');
      },
      () => Promise.reject(new Error('async failure')),
    ];
    const device: Device = { readAt: () => {}, writeAt: () => failures.shift()!(), extents: (_o, l) => [{ length: l, flags: 0 }] };
    const { engine, sent } = setup(device, { extended: true, flags: transmissionFlags(new MemoryDevice(1), false, true, true) });
    const leases = [
      payloadLease(Uint8Array.of(1)), // WRITE beyond the end: refused
      payloadLease(Uint8Array.of(1)), // WRITE whose device call throws
      payloadLease(Uint8Array.of(1)), // WRITE whose device call rejects
      payloadLease(encodeBlockStatusPayload({ effectLength: 512n, contextIds: [1] })), // read by the engine
      payloadLease(encodeBlockStatusPayload({ effectLength: 512n, contextIds: [7] })), // refused
      payloadLease(Uint8Array.of(1)), // after DISC: dropped
    ];
    engine.request(frame(req(Command.WRITE, SIZE, 1, 0, 1n), leases[0]));
    engine.request(frame(req(Command.WRITE, 0, 1, 0, 2n), leases[1]));
    engine.request(frame(req(Command.WRITE, 0, 1, 0, 3n), leases[2]));
    engine.request(frame(req(Command.BLOCK_STATUS, 0, leases[3]!.bytes.length, CommandFlag.PAYLOAD_LEN, 4n), leases[3]));
    engine.request(frame(req(Command.BLOCK_STATUS, 0, leases[4]!.bytes.length, CommandFlag.PAYLOAD_LEN, 5n), leases[4]));
    expect(engine.request(frame(req(Command.DISC, 0, 0, 0, 6n)))).toBe('disconnect');
    engine.request(frame(req(Command.WRITE, 0, 1, 0, 7n), leases[5]));
    await new Promise((r) => setImmediate(r));
    expect(leases.map((l) => l.releases)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(sent.map((r) => `${r.cookie} ${r.kind === 'error' ? r.errno : r.kind}`)).toEqual([
      `1 ${Errno.ENOSPC}`,
      `2 ${Errno.EIO}`,
      `4 block-status`,
      `5 ${Errno.EINVAL}`,
      `3 ${Errno.EIO}`,
    ]);
  });

  it('a failed read answers with the errno and releases its buffer lease', async () => {
    const failing: Device = { readAt: () => Promise.reject(new NbdErrnoError(Errno.EIO, 'bad sector')) };
    const { engine, sent, leases, leaked } = setup(failing);
    engine.request(frame(req(Command.READ, 0, 4096)));
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([{ kind: 'error', cookie: 1n, offset: 0n, type: Command.READ, errno: Errno.EIO, message: 'bad sector' }]);
    expect(leases.map((l) => l.out)).toEqual([false]);
    expect(leaked()).toBe(0);
  });

  it('invalid requests are answered without touching the device', () => {
    const { engine, sent } = setup(new MemoryDevice(SIZE), { flags: transmissionFlags(new MemoryDevice(SIZE), true, true, false) });
    const payload = payloadLease(Uint8Array.of(1));
    engine.request(frame(req(Command.WRITE, 0, 1), payload));
    engine.request(frame(req(Command.TRIM, 0, 1, 0, 2n)));
    engine.request(frame(req(Command.READ, SIZE, 1, 0, 3n)));
    expect(sent.map((r) => (r.kind === 'error' ? r.errno : r.kind))).toEqual([Errno.EPERM, Errno.EPERM, Errno.EINVAL]);
    expect(payload.releases).toBe(1);
  });

  it('a sparse read of 64 KiB or more becomes data and hole segments', () => {
    const device = new MemoryDevice(SIZE);
    device.writeAt(new Uint8Array(32 * 1024).fill(1), 64 * 1024);
    const { engine, sent, leaked } = setup(device);
    engine.request(frame(req(Command.READ, 0, 128 * 1024)));
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        const r = sent[0]!;
        if (r.kind !== 'segments') throw new Error(`expected segments, got ${r.kind}`);
        expect(r.segments.map((s) => ('hole' in s ? `hole ${s.offset}+${s.hole}` : `data ${s.offset}+${s.lease.data.length}`))).toEqual([
          'hole 0+65536',
          'data 65536+32768',
          'hole 98304+32768',
        ]);
        expect(leaked()).toBe(0);
        resolve();
      }),
    );
  });

  it('a sparse read answered during shutdown releases every segment lease', async () => {
    const memory = new MemoryDevice(SIZE);
    memory.writeAt(new Uint8Array(4096).fill(1), 0);
    memory.writeAt(new Uint8Array(4096).fill(1), 96 * 1024);
    let finish!: () => void;
    const device: Device = {
      readAt: (b, o) => new Promise<void>((r) => (finish = () => r(memory.readAt(b, o)))),
      extents: (o, l, opts) => memory.extents(o, l, opts),
    };
    const { engine, sent, leases, leaked } = setup(device);
    engine.request(frame(req(Command.READ, 0, 128 * 1024)));
    await new Promise((r) => setImmediate(r));
    finish(); // the first data segment
    await new Promise((r) => setImmediate(r));
    engine.shutdown();
    finish(); // the second
    await new Promise((r) => setImmediate(r));
    expect(sent).toMatchObject([{ kind: 'error', errno: Errno.ESHUTDOWN }]);
    expect(leases.map((l) => l.out)).toEqual([false, false]);
    expect(leaked()).toBe(0);
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
    const { engine, sent, leases } = setup(device);
    engine.request(frame(req(Command.READ, 0, 10)));
    engine.shutdown();
    engine.request(frame(req(Command.READ, 0, 10, 0, 2n)));
    finish();
    await new Promise((r) => setImmediate(r));
    expect(sent.map((r) => (r.kind === 'error' ? `${r.cookie} ${r.errno}` : r.kind))).toEqual([
      `2 ${Errno.ESHUTDOWN}`,
      `1 ${Errno.ESHUTDOWN}`,
    ]);
    expect(leases.map((l) => l.out)).toEqual([false]);
    expect(engine.request(frame(req(Command.DISC, 0, 0)))).toBe('disconnect');
    expect(engine.request(frame(req(Command.READ, 0, 10, 0, 3n)))).toBe('next');
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
