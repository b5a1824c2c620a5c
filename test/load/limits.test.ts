// Operator limits of the server, each proven by a test that fails if the limit is taken
// away: maxConnections, maxConnectionsPerClient, handshakeTimeout, maxInFlight,
// maxInFlightBytes and keepAlive (ServeOptions; qemu-nbd's --shared/--handshake-limit,
// nbdkit's --timeout, nbd-server's max_connections as models).
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { open } from '@nbd/client';
import { type Device, listen, MemoryDevice, type NbdServer, type ServeOptions } from '@nbd/server';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../support/peers.js';

const MiB = 1024 * 1024;
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));
let servers: NbdServer[] = [];
let cleanups: (() => void)[] = [];
let holders: { finish: () => void }[] = [];
afterEach(async () => {
  for (const h of holders) h.finish();
  holders = [];
  await Promise.all(servers.map((s) => s.close()));
  for (const c of cleanups) c();
  servers = [];
  cleanups = [];
});

async function unixServer(opts: ServeOptions, device: Device = new MemoryDevice(16 * MiB)): Promise<string> {
  const { dir, cleanup } = tempDir('nbd-limits-');
  cleanups.push(cleanup);
  const path = join(dir, 's.sock');
  servers.push(await listen({ path }, [{ name: 'd', size: 16 * MiB, device }], opts));
  return path;
}

async function tcpServer(opts: ServeOptions): Promise<number> {
  const s = await listen({ host: '127.0.0.1', port: 0 }, [{ name: 'd', size: 16 * MiB, device: new MemoryDevice(16 * MiB) }], opts);
  servers.push(s);
  return (s.address as { port: number }).port;
}

/** Connects and reports whether the server greets (true) or closes first (false). */
function greeted(
  target: { path: string } | { host: string; port: number; localAddress?: string },
): Promise<{ ok: boolean; socket: Socket }> {
  return new Promise((resolve) => {
    const socket = connect(target as never);
    socket.once('data', () => resolve({ ok: true, socket }));
    socket.once('close', () => resolve({ ok: false, socket }));
    socket.on('error', () => {});
  });
}

/** A device whose reads and writes wait until released: counts what is in flight at once. */
function holdingDevice(): { device: Device; inFlight: () => number; peak: () => number; drain: (work: Promise<unknown>) => Promise<void> } {
  const mem = new MemoryDevice(16 * MiB);
  const waiting: (() => void)[] = [];
  let now = 0;
  let peak = 0;
  let finished = false;
  const releaseAll = () => waiting.splice(0).forEach((f) => f());
  holders.push({ finish: () => ((finished = true), releaseAll()) });
  const hold = <T>(fn: () => T): Promise<T> | T => {
    if (finished) return fn();
    now++;
    peak = Math.max(peak, now);
    return new Promise<T>((r) =>
      waiting.push(() => {
        now--;
        r(fn());
      }),
    );
  };
  const device: Device = {
    size: 16 * MiB,
    readAt: (b, o) => hold(() => mem.readAt(b, o)),
    writeAt: (b, o) => {
      const copy = Uint8Array.from(b);
      return hold(() => mem.writeAt(copy, o));
    },
  };
  /** Releases held calls, and those that arrive after, until `work` settles. */
  const drain = async (work: Promise<unknown>) => {
    let done = false;
    void work.finally(() => (done = true));
    for (let i = 0; i < 1000 && !done; i++) {
      releaseAll();
      await settle(10);
    }
    await work;
  };
  return { device, inFlight: () => now, peak: () => peak, drain };
}

describe('operator limits', () => {
  test('maxConnections: the connection past the limit is closed before the greeting; a slot frees when one leaves', async () => {
    const path = await unixServer({ maxConnections: 5 });
    const held = await Promise.all(Array.from({ length: 5 }, () => greeted({ path })));
    expect(held.every((h) => h.ok)).toBe(true);
    const sixth = await greeted({ path });
    expect(sixth.ok).toBe(false);
    held[0]!.socket.destroy();
    await settle(100);
    const again = await greeted({ path });
    expect(again.ok).toBe(true);
    for (const h of [...held, again]) h.socket.destroy();
  });

  test('maxConnectionsPerClient: a fourth connection from 127.0.0.1 is refused while 127.0.0.2 is still admitted', async () => {
    const port = await tcpServer({ maxConnectionsPerClient: 3 });
    const held = await Promise.all(Array.from({ length: 3 }, () => greeted({ host: '127.0.0.1', port })));
    expect(held.every((h) => h.ok)).toBe(true);
    expect((await greeted({ host: '127.0.0.1', port })).ok).toBe(false);
    const other = await greeted({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
    expect(other.ok).toBe(true);
    for (const h of [...held, other]) h.socket.destroy();
  });

  test('handshakeTimeout: a client that stalls mid-handshake is closed at the limit', async () => {
    const path = await unixServer({ handshakeTimeout: 300 });
    const t0 = Date.now();
    const { ok, socket } = await greeted({ path });
    expect(ok).toBe(true);
    socket.write(Buffer.from([0, 0, 0, 3])); // client flags, then nothing
    await new Promise((r) => socket.once('close', r));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(3000);
  });

  test('maxInFlight: no more device calls at once than the limit, however many requests are pipelined', async () => {
    const h = holdingDevice();
    const path = await unixServer({ maxInFlight: 4 }, h.device);
    const conn = await open({ path }, { exportName: 'd' });
    const reads = Array.from({ length: 32 }, (_, i) => conn.read(i * 4096, 4096));
    await settle(200);
    expect(h.inFlight()).toBe(4);
    await h.drain(Promise.all(reads));
    expect(h.peak()).toBe(4);
    await conn.disconnect();
  });

  test('maxInFlightBytes: WRITE payloads in flight stop at the byte limit', async () => {
    const h = holdingDevice();
    const path = await unixServer({ maxInFlight: 1000, maxInFlightBytes: 3 * MiB }, h.device);
    const conn = await open({ path }, { exportName: 'd' });
    const payload = new Uint8Array(MiB).fill(7);
    const writes = Array.from({ length: 12 }, (_, i) => conn.write(payload, i * MiB));
    await settle(300);
    expect(h.inFlight()).toBeLessThanOrEqual(3);
    expect(h.inFlight()).toBeGreaterThan(0);
    await h.drain(Promise.all(writes));
    expect(h.peak()).toBeLessThanOrEqual(3);
    const back = conn.read(11 * MiB, 16);
    await h.drain(back);
    expect(await back).toEqual(new Uint8Array(16).fill(7));
    await conn.disconnect();
  });

  test('keepAlive: accepted TCP sockets run the kernel keepalive timer (none with keepAlive: 0)', async () => {
    /** The timer of the server's end of a connection from `clientPort`, from /proc/net/tcp: "02" is keepalive. */
    const timerOf = (serverPort: number, clientPort: number): string | undefined => {
      const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
      for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[1]?.endsWith(`:${hex(serverPort)}`) && f[2]?.endsWith(`:${hex(clientPort)}`)) return f[5]?.split(':')[0];
      }
      return undefined;
    };
    for (const [keepAlive, expected] of [
      [1000, '02'],
      [0, '00'],
    ] as const) {
      const port = await tcpServer({ keepAlive });
      const { ok, socket } = await greeted({ host: '127.0.0.1', port });
      expect(ok).toBe(true);
      await settle(50);
      expect(timerOf(port, socket.localPort!)).toBe(expected);
      socket.destroy();
    }
  });

  test('the reading pause at maxInFlight does not lose requests: 10 READs pipelined through a limit of 1', async () => {
    const path = await unixServer({ maxInFlight: 1 });
    const s = connect(path);
    await new Promise((r) => s.once('connect', r));
    const conn = await open({ path }, { exportName: 'd' });
    const got = await Promise.all(Array.from({ length: 10 }, (_, i) => conn.read(i * 512, 512)));
    expect(got.every((g) => g.length === 512)).toBe(true);
    s.destroy();
    await conn.disconnect();
  });
});
