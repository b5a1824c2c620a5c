// The hooks a worker calls on the main thread, with the two sides wired back to back
// (postMessage's structured clone included): what a hook gets and answers, and the
// lifetime of a device `open` returns.
import { describe, expect, it } from 'vitest';
import type { Device, Export } from './device.js';
import { silentLogger } from './logger.js';
import { MemoryDevice } from './memory-device.js';
import type { OpenContext } from './negotiation.js';
import type { ConnectionHooks, ConnectionInfo } from './serve-options.js';
import { SharedMemoryDevice } from './shared-memory-device.js';
import { type HookCall, HookClient, HookHost, type HookRelease } from './thread-hooks.js';

const exp: Export = { name: 'disk', size: 4096, device: new SharedMemoryDevice(4096) };

/** A host and a client talking through structuredClone, as a worker and the main thread do. */
function wired(hooks: ConnectionHooks) {
  const host = new HookHost(hooks, [exp], silentLogger);
  const owner = {};
  const client: HookClient = new HookClient(
    (m: HookCall | HookRelease) => {
      const sent = structuredClone(m);
      if (sent.type === 'release') host.release(sent.handle);
      else void host.answer(owner, sent).then((r) => client.settle(structuredClone(r)));
    },
    host.present,
    async (recipe) => (await import(recipe.module)).openDevice(recipe.args) as Device,
  );
  return { host, owner, client };
}

/** A shareable device that counts its closes. */
function counted(): { device: Device; closes: () => number } {
  let closes = 0;
  const device = new SharedMemoryDevice(4096) as SharedMemoryDevice & { close: () => void };
  device.close = () => void closes++;
  return { device, closes: () => closes };
}

const ctx = (over: Partial<OpenContext> = {}): OpenContext => ({
  export: exp,
  clientAddress: 'socket',
  readOnly: false,
  tls: { psk: 'alice', protocol: 'TLSv1.3', cipher: 'x' },
  ...over,
});

describe('hooks on the main thread', () => {
  it('proxies only the hooks there are', () => {
    expect(Object.keys(wired({}).client.forConnection(0))).toEqual([]);
    expect(Object.keys(wired({ preconnect: () => true }).client.forConnection(0))).toEqual(['preconnect']);
  });

  it('preconnect gets the same info, and its answer (or failure) comes back', async () => {
    const seen: ConnectionInfo[] = [];
    const { client } = wired({
      preconnect: async (i) => {
        seen.push(i);
        if (i.tls?.psk === 'eve') throw new Error('no eve');
        return i.tls?.psk !== 'mallory';
      },
    });
    const pre = client.forConnection(1).preconnect!;
    const info = (psk: string): ConnectionInfo => ({
      address: '10.0.0.1:5',
      remoteAddress: '10.0.0.1',
      remotePort: 5,
      tls: { psk, protocol: 'p', cipher: 'c' },
    });
    expect(await pre(info('alice'))).toBe(true);
    expect(await pre(info('mallory'))).toBe(false);
    await expect(pre(info('eve'))).rejects.toThrow('no eve');
    expect(seen[0]).toEqual(info('alice'));
  });

  it('open runs with the Export itself and the identity; the worker handle closing closes the main one', async () => {
    const made = counted();
    let got: OpenContext | undefined;
    const { client } = wired({
      open: (c) => {
        got = c;
        return made.device;
      },
    });
    const device = await client.forConnection(1).open!(ctx({ readOnly: true }));
    expect(got?.export).toBe(exp);
    expect(got).toMatchObject({ readOnly: true, clientAddress: 'socket', tls: { psk: 'alice' } });
    const io = { fua: false, signal: new AbortController().signal };
    await device.writeAt!(new Uint8Array([9]), 7, io); // the worker's handle is on the same memory
    const back = new Uint8Array(1);
    await made.device.readAt(back, 7, io);
    expect(back[0]).toBe(9);
    expect(made.closes()).toBe(0);
    await device.close!();
    await new Promise((r) => setTimeout(r, 10));
    expect(made.closes()).toBe(1);
  });

  it('open: a refusal reaches the worker; a device without share() is closed and refused', async () => {
    const plain = new MemoryDevice(4096) as MemoryDevice & { close: () => void };
    let closed = 0;
    plain.close = () => void closed++;
    const refusing = wired({ open: () => Promise.reject(new Error('eve may not')) });
    await expect(refusing.client.forConnection(1).open!(ctx())).rejects.toThrow('eve may not');
    const unshareable = wired({ open: () => plain });
    await expect(unshareable.client.forConnection(1).open!(ctx())).rejects.toThrow(/no share\(\), which threads need/);
    expect(closed).toBe(1);
  });

  it('a connection or a worker that goes away closes the devices it still held', async () => {
    const made = [counted(), counted(), counted()];
    let i = 0;
    const { client, host, owner } = wired({ open: () => made[i++]!.device });
    await client.forConnection(1).open!(ctx());
    await client.forConnection(2).open!(ctx());
    await client.forConnection(2).open!(ctx());
    host.drop(owner, 1);
    expect(made.map((m) => m.closes())).toEqual([1, 0, 0]);
    host.drop(owner);
    expect(made.map((m) => m.closes())).toEqual([1, 1, 1]);
  });
});
