// Helpers for the @nbd/devices interop tests: our server over a device beside
// nbdkit over the matching plugin and filters, and the checks that they serve the
// same thing (qemu-img compare, nbdinfo --map, and byte-for-byte through nbdcopy).
import { randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '@nbd/server';
import { expect } from 'vitest';
import { type Peer, run, runOk, startNbdkit } from '../support/peers.js';
import { type OurServer, startOurServer } from './server-support.js';

/** Ours and nbdkit's, side by side; `stop` stops both. */
export interface Pair {
  ours: OurServer;
  kit: Peer;
  stop: () => Promise<void>;
}

/** Our server over `device`, and `nbdkit -f -U SOCK ...kitArgs`. */
export async function pair(device: Device, kitArgs: string[]): Promise<Pair> {
  const ours = await startOurServer([{ name: '', size: device.size!, device }]);
  let kit: Peer;
  try {
    kit = await startNbdkit(kitArgs);
  } catch (e) {
    await ours.stop();
    throw e;
  }
  return { ours, kit, stop: async () => void (await Promise.all([ours.stop(), kit.stop()])) };
}

/** `nbdinfo --map` of an export. */
export const mapOf = (uri: string) => runOk('nbdinfo', ['--map', uri]);

/** Asserts both exports have the same bytes (qemu-img compare, and cmp of nbdcopy copies) and the same map. */
export async function expectSame(oursUri: string, kitUri: string, dir: string, opts: { maps?: boolean } = {}): Promise<void> {
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', oursUri, kitUri]);
  expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
  expect(cmp.code).toBe(0);
  const a = join(dir, 'ours.bin');
  const b = join(dir, 'kit.bin');
  await runOk('nbdcopy', [oursUri, a]);
  await runOk('nbdcopy', [kitUri, b]);
  await runOk('cmp', [a, b]);
  if (opts.maps !== false) expect(await mapOf(oursUri)).toBe(await mapOf(kitUri));
}

/** A sparse file of `size` bytes with random data in `[offset, offset + length)` runs. */
export function sparseFile(path: string, size: number, data: [number, number][]): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  for (const [at, n] of data) writeSync(fd, randomFillSync(Buffer.alloc(n)), 0, n, at);
  closeSync(fd);
}
