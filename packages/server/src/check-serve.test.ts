// What serve(), listen() and serveTransmission() refuse before any client connects:
// each refusal is an NbdInvalidArgumentError, from every entry point.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { serverTls } from '@nbd/node';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { afterAll, describe, expect, test } from 'vitest';
import { checkExports } from './check-serve.js';
import type { Export } from './device.js';
import { listen, listenAndServe } from './listener.js';
import { MemoryDevice } from './memory-device.js';
import { serve, serveTransmission } from './serve.js';
import type { ServeOptions } from './serve-options.js';
import { SharedMemoryDevice } from './shared-memory-device.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'nbd-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const exp = (name: string, over: Partial<Export> = {}): Export => ({ name, size: MiB, device: new MemoryDevice(MiB), ...over });

/** `exports` with `opts` is refused with NbdInvalidArgumentError by serve(), listen() and listenAndServe(), matching `why`. */
async function refusedEverywhere(exports: readonly Export[], opts: ServeOptions, why: RegExp): Promise<void> {
  await expect(serve(new PassThrough(), exports, opts)).rejects.toThrow(NbdInvalidArgumentError);
  await expect(serve(new PassThrough(), exports, opts)).rejects.toThrow(why);
  await expect(listen({ path: join(dir, `${++n}.sock`) }, exports, opts)).rejects.toThrow(NbdInvalidArgumentError);
  await expect(listenAndServe({ path: join(dir, `${++n}.sock`) }, exports, opts)).rejects.toThrow(why);
}

describe('exports', () => {
  test('an export larger than its device is refused (writes past the device would "succeed")', async () => {
    const exports = [{ name: 'big', size: 128 * MiB, device: new MemoryDevice(64 * MiB) }];
    expect(() => checkExports(exports)).toThrow(/export 1 \("big"\) is 134217728 bytes but its device has only 67108864/);
    await refusedEverywhere(exports, {}, /its device has only/);
  });

  test('an export as large as its device, or smaller, is served', () => {
    expect(() => checkExports([{ name: '', size: 64 * MiB, device: new MemoryDevice(64 * MiB) }])).not.toThrow();
    expect(() => checkExports([{ name: '', size: MiB, device: new MemoryDevice(64 * MiB) }])).not.toThrow();
  });

  test('no exports, a bad size, or no device: refused', async () => {
    await refusedEverywhere([], {}, /at least one export/);
    await refusedEverywhere([exp('x', { size: -1 })], {}, /bad size -1/);
    await refusedEverywhere([exp('x', { device: {} as never })], {}, /has no device/);
  });

  test('a name or description over 4096 bytes of UTF-8 (every LIST would break on it) is refused; 4096 is served', async () => {
    const long = 'é'.repeat(2049); // 2049 characters, 4098 bytes
    await refusedEverywhere([exp('ok'), exp(long)], {}, /the name of export 2 \("é+…"\) is 4098 bytes of UTF-8; the NBD limit is 4096/);
    await refusedEverywhere([exp('ok', { description: 'd'.repeat(4097) })], {}, /the description of export 1 \("ok"\) is 4097 bytes/);
    expect(() => checkExports([exp('n'.repeat(4096), { description: 'd'.repeat(4096) })])).not.toThrow();
  });

  test('a NUL in a name or description is refused (NBD strings must not hold one)', async () => {
    await refusedEverywhere([exp('a\0b')], {}, /contains a NUL/);
    await refusedEverywhere([exp('a', { description: 'x\0' })], {}, /description of export 1 \("a"\) contains a NUL/);
  });

  test('two exports with one name are refused (the second could never be chosen)', async () => {
    await refusedEverywhere([exp('disk'), exp('other'), exp('disk')], {}, /two exports are named "disk"/);
    await refusedEverywhere([exp(''), exp('')], {}, /two exports are named ""/);
  });

  test('the empty name on an export other than the first is refused (it selects the first)', async () => {
    await refusedEverywhere([exp('a'), exp('')], {}, /export 2 \(""\) has the empty name, which selects export 1/);
    expect(() => checkExports([exp(''), exp('a')])).not.toThrow();
  });
});

describe('options', () => {
  test('a tlsOnly export without TLS is refused (NOTLS may not answer ERR_TLS_REQD; the export could never be used)', async () => {
    await refusedEverywhere([exp('a'), exp('s', { tlsOnly: true })], {}, /export 2 \("s"\) is tlsOnly, but TLS is off/);
    await refusedEverywhere([exp('s', { tlsOnly: true })], { tls: { mode: 'off' } }, /tlsOnly, but TLS is off/);
  });

  test('a misspelt TLS mode is refused (it would act as "on": plaintext for most exports)', async () => {
    await refusedEverywhere([exp('a')], { tls: { mode: 'required' as never, psk: { alice: '00' } } }, /tls.mode must be/);
  });

  test('oldstyle with TLS, and an unknown handshake, are refused', async () => {
    await refusedEverywhere([exp('a')], { handshake: 'oldstyle', tls: { psk: { alice: '00' } } }, /oldstyle handshake has no STARTTLS/);
    await refusedEverywhere([exp('a')], { handshake: 'old' as never }, /handshake must be/);
  });

  test.each<[keyof ServeOptions, number]>([
    ['maxConnections', 0],
    ['maxConnectionsPerClient', -1],
    ['handshakeTimeout', Number.NaN],
    ['maxPayload', 2 ** 32],
    ['maxInFlight', 1.5],
    ['maxInFlightBytes', 0],
    ['keepAlive', -1],
    ['threads', Number.NaN],
    ['threads', 1.5],
  ])('%s = %d is refused', async (key, value) => {
    await refusedEverywhere([exp('a')], { [key]: value }, new RegExp(`${key} must be an integer`));
  });

  test('threads: devices without share() and prepared TLS credentials are refused before listening', async () => {
    const path = () => ({ path: join(dir, `${++n}.sock`) });
    await expect(listen(path(), [exp('a')], { threads: 2 })).rejects.toThrow(NbdInvalidArgumentError);
    await expect(listen(path(), [exp('a')], { threads: 2 })).rejects.toThrow(/has no share\(\)/);
    const shared: Export = { name: 'a', size: MiB, device: new SharedMemoryDevice(MiB) };
    const tls = await serverTls({ psk: { alice: '0011' } });
    await expect(listen(path(), [shared], { threads: 2, tls })).rejects.toThrow(NbdInvalidArgumentError);
  });

  test('serveTransmission refuses options that would do nothing there (preconnect, open, tls, handshake, threads)', async () => {
    for (const opts of [
      { preconnect: () => false },
      { open: () => new MemoryDevice(MiB) },
      { tls: { psk: { a: '00' } } },
      { threads: 2 },
    ]) {
      await expect(serveTransmission(new PassThrough(), exp('a'), opts as never)).rejects.toThrow(NbdInvalidArgumentError);
    }
    await expect(serveTransmission(new PassThrough(), exp('a', { size: -1 }))).rejects.toThrow(NbdInvalidArgumentError);
  });
});
