import { PassThrough } from 'node:stream';
import { TransmissionFlag as T } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { backendOf, prepare } from './configure.js';

const flags = T.HAS_FLAGS | T.SEND_FLUSH;

/** Looks like a unix socket's handle to @nbd/node (a plain Pipe with a descriptor). */
class Pipe {
  constructor(readonly fd: number) {}
}

describe('prepare (what configure checks before the kernel sees anything)', () => {
  test('several connections without CAN_MULTI_CONN are refused with the reason', () => {
    const c = { fd: 3, size: 1 << 20, flags };
    expect(() => prepare([c, { ...c, fd: 4 }])).toThrow(/does not advertise CAN_MULTI_CONN; the kernel would refuse/);
  });

  test('several connections with CAN_MULTI_CONN pass, fds in order', () => {
    const c = { fd: 3, size: 1 << 20, flags: flags | T.CAN_MULTI_CONN };
    expect(prepare([c, { ...c, fd: 9 }]).fds).toEqual([3, 9]);
  });

  test('connections to different exports are refused', () => {
    expect(() =>
      prepare([
        { fd: 3, size: 1 << 20, flags: flags | T.CAN_MULTI_CONN },
        { fd: 4, size: 2 << 20, flags: flags | T.CAN_MULTI_CONN },
      ]),
    ).toThrow(/disagree on size or flags/);
  });

  test('block size: default 512, at least the server minimum, must be a power of 2 ≥ 512', () => {
    expect(prepare({ fd: 3, size: 4096, flags }).blockSize).toBe(512);
    expect(prepare({ fd: 3, size: 4096, flags, blockSize: 4096 }).blockSize).toBe(4096);
    expect(prepare({ fd: 3, size: 4096, flags, blockSize: 1 }).blockSize).toBe(512);
    expect(() => prepare({ fd: 3, size: 4096, flags }, 1000)).toThrow(/power of 2/);
    expect(() => prepare({ fd: 3, size: 4096, flags }, 256)).toThrow(/power of 2/);
  });

  test('a bad size or no connection at all is refused', () => {
    expect(() => prepare([])).toThrow(/no connections/);
    expect(() => prepare({ fd: 3, size: -1, flags })).toThrow(/bad export size/);
  });

  test('a stream without a file descriptor (TLS) reaches the kernel through a pump: a socketpair end', () => {
    const stream = new PassThrough();
    const p = prepare({ socket: stream, size: 4096, flags });
    expect(p.fds).toHaveLength(1);
    expect(p.pumped).toEqual([stream]);
    for (const s of [...p.sockets, ...p.pumped]) s.destroy();
  });

  test('a detachable Connection is detached and its info used', () => {
    let detached = 0;
    const sock = Object.assign(new PassThrough(), { _handle: new Pipe(42) });
    const conn = {
      info: { size: 8192, flags, blockSizes: { min: 4096, preferred: 4096 } },
      detach: () => (detached++, { socket: sock }),
    };
    const p = prepare(conn);
    expect(detached).toBe(1);
    expect(p).toMatchObject({ fds: [42], size: 8192, flags, blockSize: 4096 });
  });

  test('a refusal detaches nothing: the Connections stay usable', () => {
    let detached = 0;
    const conn = () => ({
      info: { size: 8192, flags },
      detach: () => (detached++, { socket: Object.assign(new PassThrough(), { _handle: new Pipe(42) }) }),
    });
    expect(() => prepare([conn(), conn()])).toThrow(/does not advertise CAN_MULTI_CONN/);
    expect(() => prepare(conn(), 1000)).toThrow(/power of 2/);
    expect(detached).toBe(0);
  });

  test('if a detach fails, the sockets already detached are closed, not leaked', () => {
    const good = Object.assign(new PassThrough(), { _handle: new Pipe(42) });
    const conns = [
      { info: { size: 8192, flags: flags | T.CAN_MULTI_CONN }, detach: () => ({ socket: good }) },
      {
        info: { size: 8192, flags: flags | T.CAN_MULTI_CONN },
        detach: (): { socket: PassThrough } => {
          throw new Error('cannot stop reading');
        },
      },
    ];
    expect(() => prepare(conns)).toThrow(/cannot stop reading/);
    expect(good.destroyed).toBe(true);
  });
});

describe('backendOf (what supervise sends with RECONFIGURE)', () => {
  test('reads /sys/block/nbdN/backend; none when the device has no backend', async () => {
    const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const sys = mkdtempSync(join(tmpdir(), 'nbd-sysfs-'));
    try {
      mkdirSync(join(sys, 'block/nbd3'), { recursive: true });
      writeFileSync(join(sys, 'block/nbd3/backend'), 'nbd+unix:///?socket=/run/x.sock\n');
      mkdirSync(join(sys, 'block/nbd4'), { recursive: true });
      expect(backendOf(3, sys)).toBe('nbd+unix:///?socket=/run/x.sock');
      expect(backendOf(4, sys)).toBeUndefined();
    } finally {
      rmSync(sys, { recursive: true, force: true });
    }
  });
});
