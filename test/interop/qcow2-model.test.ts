// QcowDevice against a model: an image made by qemu-img is loaded into a MemoryDevice
// (the "file"), then batches of concurrent writes, zeroes and trims on disjoint random
// ranges (unaligned, crossing clusters) run on it, with flushes now and then; after
// every batch the whole disk must equal a plain byte-array model, and at the end the
// image must pass `qemu-img check` without a leak. Several cluster layouts, with and
// without a (shorter) backing file, three seeds each.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QcowDevice } from '@nbd/devices';
import { MemoryDevice } from '@nbd/server';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../support/peers.js';
import { QEMU_10 } from '../support/qemu.js';
import { createImage, expectCheckClean, MiB } from './qcow2-support.js';

const SIZE = 8 * MiB;
const FILE = 64 * MiB;
const io = { fua: false, signal: new AbortController().signal };

/** xorshift32: the same ops for a seed. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

describe.each([
  ['64 KiB clusters', ['cluster_size=64k'], 64 * 1024, false],
  ['extended L2, 16 KiB clusters', ['extended_l2=on', 'cluster_size=16k'], 16 * 1024, false],
  ['512 B clusters, 64-bit refcounts', ['cluster_size=512', 'refcount_bits=64'], 512, false],
  ['version 2, 4 KiB clusters', ['compat=0.10', 'cluster_size=4k'], 4096, false],
  ['64 KiB clusters over a shorter raw backing file', ['cluster_size=64k'], 64 * 1024, true],
  ['extended L2, 32 KiB clusters over a shorter raw backing file', ['extended_l2=on', 'cluster_size=32k'], 32 * 1024, true],
] as const)('QcowDevice against a byte-array model (%s)', (_name, opts, C, withBacking) => {
  const tmp = tempDir('nbd-qcow2-model-');
  afterAll(() => tmp.cleanup());

  it.each([1, 2, 3])('seed %i: concurrent batches of writes, zeroes and trims read back as the model says; check clean', async (seed) => {
    const path = join(tmp.dir, `seed${seed}.qcow2`);
    const model = new Uint8Array(SIZE);
    const rand = prng(seed * 7919);
    let backing: MemoryDevice | undefined;
    if (withBacking) {
      // Random bytes, 5 MiB + 1000: the image reads zeroes past them.
      const base = join(tmp.dir, `base${seed}.raw`);
      const bytes = Uint8Array.from({ length: 5 * MiB + 1000 }, () => rand(256));
      writeFileSync(base, bytes);
      model.set(bytes);
      backing = new MemoryDevice(bytes.length);
      await backing.writeAt(bytes, 0);
      await createImage(QEMU_10, path, SIZE, opts, ['-b', base, '-F', 'raw']);
    } else await createImage(QEMU_10, path, SIZE, opts);
    const file = new MemoryDevice(FILE);
    const initial = readFileSync(path);
    await file.writeAt(initial, 0);
    const open = () => QcowDevice.open(file, { grow: false, path, ...(backing ? { backing } : {}) });
    let dev = await open();
    const v3 = dev.version >= 3;
    for (let batch = 0; batch < 40; batch++) {
      const taken: [number, number][] = [];
      const ops: (Promise<void> | void)[] = [];
      for (let k = 0; k < 1 + rand(8); k++) {
        const at = rand(SIZE - 1);
        const len = Math.min(SIZE - at, 1 + rand(rand(4) === 0 ? 600_000 : 20_000));
        if (taken.some(([s, e]) => at < e && s < at + len)) continue;
        taken.push([at, at + len]);
        const kind = rand(10);
        if (kind < 6) {
          const data = new Uint8Array(len).fill(1 + rand(255));
          model.set(data, at);
          ops.push(dev.writeAt!(data, at, io));
        } else if (kind < 8) {
          model.fill(0, at, at + len);
          ops.push(dev.zero!(at, len, { ...io, noHole: rand(2) === 0, fast: false }));
        } else {
          // Whole clusters read as zeroes afterwards (version 3 marks them zero; version 2
          // unallocates them, which reads zeroes as these version 2 images have no backing file).
          const c0 = Math.ceil(at / C) * C;
          const c1 = at + len === SIZE ? SIZE : Math.floor((at + len) / C) * C;
          if (c1 > c0 && (v3 || !withBacking)) model.fill(0, c0, c1);
          ops.push(dev.trim!(at, len, io));
        }
      }
      if (rand(5) === 0) ops.push(dev.sync!(io));
      await Promise.all(ops);
      const got = new Uint8Array(SIZE);
      await dev.readAt(got, 0, io);
      expect(Buffer.compare(got, model), `batch ${batch}`).toBe(0);
      if (batch === 20) {
        // Closed and opened again: what the metadata on "disk" says is the same.
        await dev.close();
        dev = await open();
      }
    }
    await dev.close();
    const bytes = new Uint8Array(FILE);
    await file.readAt(bytes, 0);
    writeFileSync(path, bytes); // the whole memory is the file: clusters past the image's are free
    const out = await expectCheckClean(QEMU_10, path);
    expect(out).not.toMatch(/leaked/);
  });
});
