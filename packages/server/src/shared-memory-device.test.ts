import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { MEMORY_PAGE_SIZE as P } from './memory-device.js';
import { openDevice, SHARED_SLAB_SIZE as S, SharedMemoryDevice, type SharedMemoryDeviceArgs } from './shared-memory-device.js';

const HOLE = 3;
const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) % 251);
const read = (d: SharedMemoryDevice, offset: number, length: number) => {
  const b = new Uint8Array(length).fill(0x5a);
  d.readAt(b, offset);
  return b;
};
const allZero = (b: Uint8Array) => b.every((x) => x === 0);
// Byte comparison through Buffer.equals: toEqual walks big arrays element by element, slowly.
const same = (x: Uint8Array, y: Uint8Array) => Buffer.from(x.buffer, x.byteOffset, x.length).equals(y);

describe('SharedMemoryDevice', () => {
  it('allocates the whole size as 64 MiB slabs (last one shorter) and a bitmap of one bit per page', () => {
    const args = new SharedMemoryDevice(2 * S + 3 * P + 5).share().args as SharedMemoryDeviceArgs;
    expect(args.slabs.map((s) => s.byteLength)).toEqual([S, S, 3 * P + 5]);
    // 2 * S / P + 4 pages = 4100 bits → 129 words.
    expect(args.map.byteLength).toBe(129 * 4);
    expect(() => new SharedMemoryDevice(-1)).toThrow(NbdInvalidArgumentError);
    expect(() => new SharedMemoryDevice(1.5)).toThrow(NbdInvalidArgumentError);
    expect(new SharedMemoryDevice(0).extents(0, 0, { reqOne: false })).toEqual([]);
  });

  it('a 4 GiB device costs almost no RSS until written', () => {
    const before = process.memoryUsage().rss;
    const d = new SharedMemoryDevice(4 * 2 ** 30);
    const after = process.memoryUsage().rss;
    expect(after - before).toBeLessThan(64 * 2 ** 20);
    expect(d.allocated).toBe(0);
    // Trimming and zeroing holes must not touch (and so make resident) their memory.
    d.trim(0, d.size);
    d.zero(0, d.size, { noHole: false });
    d.zero(S, S, { noHole: true });
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 2 ** 20);
    expect(d.allocated).toBe(S);
    expect(allZero(read(d, S - 10, 2 * P))).toBe(true);
  });

  it('writes and reads across page and slab boundaries, and up to the short last page', () => {
    const size = 2 * S + 3 * P + 5;
    const d = new SharedMemoryDevice(size);
    const a = pattern(2 * P + 10, 1);
    d.writeAt(a, S - P - 5); // ends in the second slab's second page
    const b = pattern(P + 9, 2);
    d.writeAt(b, size - b.length); // the last (short) slab and its short last page
    expect(same(read(d, S - P - 5, a.length), a)).toBe(true);
    expect(same(read(d, size - b.length, b.length), b)).toBe(true);
    // Holes around the writes read as zeroes.
    expect(allZero(read(d, S - 4 * P, 3 * P - 5))).toBe(true);
    expect(allZero(read(d, S + P + 5, 4 * P))).toBe(true);
    expect(allZero(read(d, 2 * S - P, 2 * P - 4))).toBe(true);
    expect(d.allocated).toBe(4 * P + 3 * P);
    // A read across the second slab boundary sees the write after it in place.
    const tail = read(d, 2 * S - 3, 2 * P + 5);
    expect(allZero(tail.subarray(0, 2 * P - 1))).toBe(true);
    expect(tail.subarray(2 * P - 1, 2 * P + 5)).toEqual(b.subarray(0, 6));
  });

  it('extents report holes and data, merged, and stop after the first with reqOne', () => {
    const d = new SharedMemoryDevice(S + 8 * P);
    d.writeAt(new Uint8Array(10).fill(1), 2 * P + 3);
    d.writeAt(new Uint8Array(10).fill(1), 3 * P);
    d.writeAt(new Uint8Array(2 * P).fill(1), S - P); // across the slab boundary
    expect(d.extents(0, S + 8 * P, { reqOne: false })).toEqual([
      { length: 2 * P, flags: HOLE },
      { length: 2 * P, flags: 0 },
      { length: S - 5 * P, flags: HOLE },
      { length: 2 * P, flags: 0 },
      { length: 7 * P, flags: HOLE },
    ]);
    expect(d.extents(100, P, { reqOne: true })).toEqual([{ length: P, flags: HOLE }]);
    expect(d.extents(2 * P + 1, 5 * P, { reqOne: true })).toEqual([{ length: 2 * P - 1, flags: 0 }]);
    expect(d.extents(S - 2 * P + 7, 2 * P, { reqOne: false })).toEqual([
      { length: P - 7, flags: HOLE },
      { length: P + 7, flags: 0 },
    ]);
  });

  it('sets bitmap bits a word at a time across words', () => {
    const d = new SharedMemoryDevice(200 * P);
    // Pages 30..100: the tail of word 0, all of words 1 and 2, the head of word 3.
    d.writeAt(new Uint8Array(70 * P + 1).fill(1), 30 * P);
    expect(d.extents(0, 200 * P, { reqOne: false })).toEqual([
      { length: 30 * P, flags: HOLE },
      { length: 71 * P, flags: 0 },
      { length: 99 * P, flags: HOLE },
    ]);
    expect(d.allocated).toBe(71 * P);
    // Bit 31 of a word (the int32 sign bit), alone and as the head of a run.
    d.writeAt(new Uint8Array(1).fill(1), 127 * P);
    d.writeAt(new Uint8Array(P + 1).fill(1), 159 * P);
    expect(d.extents(126 * P, 3 * P, { reqOne: false })).toEqual([
      { length: P, flags: HOLE },
      { length: P, flags: 0 },
      { length: P, flags: HOLE },
    ]);
    expect(d.extents(158 * P, 4 * P, { reqOne: false })).toEqual([
      { length: P, flags: HOLE },
      { length: 2 * P, flags: 0 },
      { length: P, flags: HOLE },
    ]);
    expect(d.allocated).toBe(74 * P);
  });

  it('trim and zero make whole pages holes and zero partial ones; noHole keeps or sets bits', () => {
    const d = new SharedMemoryDevice(4 * P + 100);
    d.writeAt(new Uint8Array(4 * P + 100).fill(0xee), 0);
    d.trim(10, 2 * P);
    expect(d.extents(0, 4 * P + 100, { reqOne: false })).toEqual([
      { length: P, flags: 0 },
      { length: P, flags: HOLE },
      { length: 2 * P + 100, flags: 0 },
    ]);
    const b = read(d, 0, 2 * P + 20);
    expect(b.subarray(0, 10).every((x) => x === 0xee)).toBe(true);
    expect(allZero(b.subarray(10, 2 * P + 10))).toBe(true);
    expect(b.subarray(2 * P + 10).every((x) => x === 0xee)).toBe(true);

    d.zero(3 * P, P, { noHole: true });
    expect(allZero(read(d, 3 * P, P))).toBe(true);
    expect(d.extents(3 * P, P, { reqOne: false })).toEqual([{ length: P, flags: 0 }]);
    d.zero(3 * P, P);
    expect(d.extents(3 * P, P, { reqOne: false })).toEqual([{ length: P, flags: HOLE }]);

    // The short last page counts as whole when the range reaches the end.
    d.zero(4 * P + 50, 50);
    expect(
      read(d, 4 * P, 100)
        .subarray(0, 50)
        .every((x) => x === 0xee),
    ).toBe(true);
    expect(d.extents(4 * P, 100, { reqOne: false })).toEqual([{ length: 100, flags: 0 }]);
    d.trim(4 * P, 100);
    expect(d.extents(4 * P, 100, { reqOne: false })).toEqual([{ length: 100, flags: HOLE }]);
    expect(allZero(read(d, 4 * P, 100))).toBe(true);

    // noHole on a hole marks it allocated; its bytes stay zero.
    d.zero(P + 5, 10, { noHole: true });
    expect(d.extents(P, P, { reqOne: false })).toEqual([{ length: P, flags: 0 }]);
    expect(allZero(read(d, P, P))).toBe(true);
    expect(d.allocated).toBe(3 * P);
  });

  it("copies data intact whatever the alignment of the caller's buffer (payloads sit at any offset of the read buffer)", () => {
    const d = new SharedMemoryDevice(8 * 1024 * 1024);
    const data = new Uint8Array(3 * 1024 * 1024 + 5);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 11)) & 255;
    for (const [srcShift, at] of [
      [3, 5],
      [28, 0],
      [0, 8],
      [1, 4096 + 7],
    ] as const) {
      const carrier = new Uint8Array(data.length + 32);
      const src = carrier.subarray(srcShift, srcShift + data.length);
      src.set(data);
      d.writeAt(src, at);
      const outCarrier = new Uint8Array(data.length + 8);
      const out = outCarrier.subarray(5, 5 + data.length);
      d.readAt(out, at);
      expect(Buffer.compare(out, data)).toBe(0);
    }
  });

  it('lends views equal to readAt, one per slab touched', () => {
    const d = new SharedMemoryDevice(2 * S);
    d.writeAt(pattern(4 * P, 3), S - 2 * P);
    d.writeAt(pattern(P, 4), 5 * P);
    for (const [off, len] of [
      [S - 2 * P, 4 * P],
      [P + 7, 6 * P],
      [S - 3, 5],
      [S, P],
      [0, 8 * P],
    ] as const) {
      const loan = d.lend(off, len);
      expect(same(Buffer.concat(loan.views), read(d, off, len))).toBe(true);
      expect(loan.views.length).toBe(off < S && off + len > S ? 2 : 1);
      loan.release();
    }
    // The views are the device's memory: a later write shows through them.
    const loan = d.lend(5 * P, P);
    d.writeAt(new Uint8Array(1).fill(0xab), 5 * P);
    expect(loan.views[0]![0]).toBe(0xab);
  });

  it('share() + openDevice give a second handle on the same memory and bitmap', () => {
    const d = new SharedMemoryDevice(S + 4 * P);
    const recipe = d.share();
    expect(recipe.module).toMatch(/\/shared-memory-device\.(ts|js)$/);
    const e = openDevice(structuredClone(recipe.args));
    expect(e).toBeInstanceOf(SharedMemoryDevice);
    expect(e.size).toBe(d.size);
    expect(e.multiConn && e.fua).toBe(true);
    const a = pattern(2 * P, 5);
    d.writeAt(a, S - P);
    expect(same(read(e, S - P, 2 * P), a)).toBe(true);
    e.trim(S - P, P);
    expect(allZero(read(d, S - P, P))).toBe(true);
    expect(d.extents(S - P, 3 * P, { reqOne: false })).toEqual([
      { length: P, flags: HOLE },
      { length: P, flags: 0 },
      { length: P, flags: HOLE },
    ]);
    expect(SharedMemoryDevice.attach(recipe.args).allocated).toBe(P);
  });

  it('openDevice rejects args that do not describe a device with an NbdInvalidArgumentError', () => {
    const good = new SharedMemoryDevice(S + P).share().args as SharedMemoryDeviceArgs;
    const slab0 = good.slabs[0]!;
    const bads: unknown[] = [
      undefined,
      null,
      42,
      'args',
      {},
      { ...good, size: -1 },
      { ...good, size: '1' },
      { ...good, size: S + P + 1 }, // the last slab is then one byte short
      { ...good, size: 2 ** 53 },
      { ...good, slabs: undefined },
      { ...good, slabs: [slab0] },
      { ...good, slabs: [slab0, new ArrayBuffer(P)] },
      { ...good, slabs: [slab0, new SharedArrayBuffer(P + 1)] },
      { ...good, slabs: [slab0, new Uint8Array(new SharedArrayBuffer(P))] },
      { ...good, map: new ArrayBuffer(4) },
      { ...good, map: new SharedArrayBuffer(8) },
      { ...good, map: new Int32Array(good.map) },
    ];
    for (const bad of bads) expect(() => openDevice(bad), JSON.stringify(bad)).toThrow(NbdInvalidArgumentError);
    expect(openDevice({ ...good }).size).toBe(S + P);
  });
});

describe('SharedMemoryDevice in worker threads', () => {
  // Workers import the built module (plain Node cannot import the .ts sources).
  const distUrl = new URL('../dist/shared-memory-device.js', import.meta.url);
  type Module = typeof import('./shared-memory-device.js');
  const load = async (): Promise<Module> => {
    if (!existsSync(distUrl)) throw new Error(`${distUrl.pathname} is missing: run pnpm exec tsc -b first`);
    return (await import(distUrl.href)) as Module;
  };

  /** Runs `body` (CommonJS, with `d` the device opened from the recipe and `data` the extra data) in a worker; resolves with what it posts. */
  const inWorker = (recipe: unknown, data: unknown, body: string): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const code = `
        const { workerData, parentPort } = require('node:worker_threads');
        import(workerData.recipe.module).then((m) => {
          const d = m.openDevice(workerData.recipe.args);
          const data = workerData.data;
          ${body}
        });`;
      const w = new Worker(code, { eval: true, workerData: { recipe, data } });
      w.once('message', (m) => {
        resolve(m);
        void w.terminate();
      });
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`worker exited with ${code} before replying`)));
    });

  it('a worker opens the device through its recipe, writes, and the main thread reads it back', async () => {
    const { SharedMemoryDevice: Built } = await load();
    const d = new Built(2 * S);
    const recipe = d.share();
    expect(recipe.module).toBe(distUrl.href);
    d.writeAt(pattern(P, 9), 10 * P);
    const a = pattern(3 * P + 11, 6);
    const seen = await inWorker(
      recipe,
      { a, at: S - P - 3 },
      `
      const back = new Uint8Array(${P});
      d.readAt(back, ${10 * P});
      d.writeAt(data.a, data.at);
      d.trim(${10 * P}, ${P});
      parentPort.postMessage({ size: d.size, back });`,
    );
    expect(seen).toEqual({ size: 2 * S, back: pattern(P, 9) });
    expect(same(read(d, S - P - 3, a.length), a)).toBe(true);
    expect(allZero(read(d, 10 * P, P))).toBe(true);
    expect(d.extents(S - 3 * P, 7 * P, { reqOne: false })).toEqual([
      { length: P, flags: HOLE },
      { length: 5 * P, flags: 0 },
      { length: P, flags: HOLE },
    ]);
    expect(d.extents(10 * P, P, { reqOne: true })).toEqual([{ length: P, flags: HOLE }]);
    // The source build (this test's import) attaches to buffers the built one made.
    expect(same(read(new SharedMemoryDevice(recipe.args as SharedMemoryDeviceArgs), S - P - 3, a.length), a)).toBe(true);
  });

  it('two workers setting and clearing bits of the same bitmap words at once lose no update', async () => {
    const { SharedMemoryDevice: Built } = await load();
    const pages = 64; // two bitmap words, so the workers contend on every update
    const rounds = 300;
    const d = new Built(pages * P);
    const recipe = d.share();
    const gate = new Int32Array(new SharedArrayBuffer(4));
    // Worker k writes and trims pages k, k + 2, k + 4, …: only it changes their
    // bits, so after its own write (trim) each must read as data (hole), whatever
    // the other worker does to the neighbouring bits meanwhile.
    const body = `
      const gate = new Int32Array(data.gate);
      Atomics.add(gate, 0, 1);
      while (Atomics.load(gate, 0) < 2); // start together
      const one = new Uint8Array(1).fill(data.k + 1);
      let wrong = 0;
      for (let round = 0; round < ${rounds}; round++) {
        for (let p = data.k; p < ${pages}; p += 2) d.writeAt(one, p * ${P} + round);
        for (let p = data.k; p < ${pages}; p += 2) if (d.extents(p * ${P}, ${P}, { reqOne: true })[0].flags !== 0) wrong++;
        if (round === ${rounds - 1}) break;
        for (let p = data.k; p < ${pages}; p += 2) d.trim(p * ${P}, ${P});
        for (let p = data.k; p < ${pages}; p += 2) if (d.extents(p * ${P}, ${P}, { reqOne: true })[0].flags !== 3) wrong++;
      }
      parentPort.postMessage(wrong);`;
    const wrong = await Promise.all([
      inWorker(recipe, { k: 0, gate: gate.buffer }, body),
      inWorker(recipe, { k: 1, gate: gate.buffer }, body),
    ]);
    expect(wrong).toEqual([0, 0]);
    expect(d.extents(0, pages * P, { reqOne: false })).toEqual([{ length: pages * P, flags: 0 }]);
    expect(d.allocated).toBe(pages * P);
    expect(read(d, 0, 1)[0]).toBe(0); // trimmed in round 0
    expect(read(d, rounds - 1, 1)[0]).toBe(1);
    expect(read(d, P + rounds - 1, 1)[0]).toBe(2);
  });
});
