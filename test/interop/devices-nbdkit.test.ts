// @nbd/devices against nbdkit: each source and filter with an nbdkit equivalent
// serves the same data (qemu-img compare, cmp of nbdcopy copies) and the same
// allocation map (nbdinfo --map) as nbdkit with the matching plugin and filter.
import { closeSync, copyFileSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import {
  blocksize,
  cow,
  DataDevice,
  FileDevice,
  offset,
  PatternDevice,
  partition,
  RandomDevice,
  SparseRandomDevice,
  truncate,
} from '@nbd/devices';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closing } from '../support/closing.js';
import { run, runOk, tempDir } from '../support/peers.js';
import { expectSame, mapOf, type Pair, pair, sparseFile } from './devices-support.js';

const MiB = 1024 * 1024;

describe('@nbd/devices sources vs nbdkit plugins', () => {
  const tmp = tempDir('nbd-dev-kit-');
  let p: Pair | undefined;
  afterEach(async () => {
    await p?.stop();
    p = undefined;
  });
  afterAll(() => tmp.cleanup());

  it('pattern', async () => {
    p = await pair(new PatternDevice(8 * MiB), ['pattern', `${8 * MiB}`]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });

  it('pattern with a size that is not a multiple of 8 (the last word cut short)', async () => {
    p = await pair(new PatternDevice(MiB + 3), ['pattern', `${MiB + 3}`]);
    const a = join(tmp.dir, 'a');
    const b = join(tmp.dir, 'b');
    await runOk('nbdcopy', [p.ours.uri(), a]);
    await runOk('nbdcopy', [p.kit.uri, b]);
    await runOk('cmp', [a, b]);
    expect(readFileSync(a).length).toBe(MiB + 3);
  });

  it("sparse-random with the same seed: same bytes, same map (nbdkit's algorithm)", async () => {
    const dev = new SparseRandomDevice(64 * MiB, { seed: 5, percent: 30, runLength: MiB });
    p = await pair(dev, ['sparse-random', `${64 * MiB}`, 'seed=5', 'percent=30', `runlength=${MiB}`]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
    expect((await mapOf(p.ours.uri())).split('\n').length).toBeGreaterThan(10);
  });

  it('sparse-random with random content', async () => {
    const dev = new SparseRandomDevice(16 * MiB, { seed: 77, percent: 50, runLength: 256 * 1024, randomContent: true });
    p = await pair(dev, ['sparse-random', `${16 * MiB}`, 'seed=77', 'percent=50', `runlength=${256 * 1024}`, 'random-content=true']);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });

  it('random with the same seed', async () => {
    p = await pair(new RandomDevice(MiB, { seed: 12345 }), ['random', `${MiB}`, 'seed=12345']);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });

  it('a different seed is told apart (the comparison can fail)', async () => {
    p = await pair(new RandomDevice(MiB, { seed: 1 }), ['random', `${MiB}`, 'seed=2']);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', p.ours.uri(), p.kit.uri]);
    expect(cmp.code).toBe(1);
  });

  it('data: the data format, repeated and placed', async () => {
    const spec = '( 0x55 0xAA )*2048 @0x50000 "Hello"*100 @^4096 le32:0xdeadbeef';
    p = await pair(new DataDevice(spec, { size: MiB }), ['data', spec, `size=${MiB}`]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });

  it('data: bytes (nbdkit base64=)', async () => {
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) & 0xff);
    p = await pair(new DataDevice(bytes, { size: 2 * MiB }), [
      'data',
      `base64=${Buffer.from(bytes).toString('base64')}`,
      `size=${2 * MiB}`,
    ]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });
});

describe('@nbd/devices filters vs nbdkit filters', () => {
  const keep = closing();
  const tmp = tempDir('nbd-dev-kitf-');
  const disk = join(tmp.dir, 'disk.img');
  let p: Pair | undefined;

  beforeAll(() => {
    // 32 MiB, MBR: partition 1 at 1 MiB (8 MiB), partition 2 at 16 MiB (12 MiB); data runs and holes in both.
    sparseFile(disk, 32 * MiB, [
      [MiB, 2 * MiB],
      [5 * MiB, 64 * 1024],
      [16 * MiB, 3 * MiB],
      [24 * MiB + 4096, 100_000],
    ]);
    const mbr = Buffer.alloc(512);
    const entry = (i: number, type: number, first: number, count: number) => {
      mbr[0x1be + 16 * i + 4] = type;
      mbr.writeUInt32LE(first, 0x1be + 16 * i + 8);
      mbr.writeUInt32LE(count, 0x1be + 16 * i + 12);
    };
    entry(0, 0x83, 2048, 16384);
    entry(1, 0x83, 32768, 24576);
    mbr.writeUInt16LE(0xaa55, 510);
    const fd = openSync(disk, 'r+');
    writeSync(fd, mbr, 0, 512, 0);
    closeSync(fd);
  });
  afterEach(async () => {
    await p?.stop();
    p = undefined;
  });
  afterAll(() => tmp.cleanup());

  const file = async (path = disk, readOnly = true) => keep(await FileDevice.open(path, { readOnly }));

  it('--filter=partition partition=1 and partition=2', async () => {
    for (const n of [1, 2]) {
      p = await pair(await partition(await file(), n), ['--filter=partition', 'file', disk, `partition=${n}`]);
      await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
      await p.stop();
      p = undefined;
    }
  });

  it('--filter=offset', async () => {
    p = await pair(offset(await file(), { offset: MiB, range: 20 * MiB }), [
      '--filter=offset',
      'file',
      disk,
      `offset=${MiB}`,
      `range=${20 * MiB}`,
    ]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });

  it('--filter=truncate: grow, shrink, round-up', async () => {
    const cases: [Parameters<typeof truncate>[1], string][] = [
      [{ size: 40 * MiB }, `truncate=${40 * MiB}`],
      [{ size: 5 * MiB + 4096 }, `truncate=${5 * MiB + 4096}`],
      [{ roundUp: 8 * MiB }, `round-up=${8 * MiB}`],
    ];
    for (const [opts, arg] of cases) {
      p = await pair(truncate(await file(), opts), ['--filter=truncate', 'file', disk, arg]);
      await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
      await p.stop();
      p = undefined;
    }
  });

  it('--filter=cow: the same writes, zeroes and discards give the same disk; the base file is untouched', async () => {
    const before = readFileSync(disk);
    p = await pair(cow(await file()), ['--filter=cow', 'file', disk]);
    const cmds = ['write -P 0xab 100000 50000', 'write -z 1M 256k', 'discard 2M 128k', 'write -P 0x11 20M 4k', 'flush'];
    for (const uri of [p.ours.uri(), p.kit.uri]) {
      await runOk('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
    }
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
    expect(Buffer.compare(readFileSync(disk), before)).toBe(0);
    // The discarded blocks are a hole now (the base had data there); qemu-io's write -z
    // asks for NO_HOLE, so those blocks are stored zeroes (data), in both.
    const ours = await mapOf(p.ours.uri());
    expect(ours).toMatch(/2097152\s+131072\s+3\s+hole,zero/);
    expect(ours).toMatch(/1048576\s+\d+\s+0\s+data/);
  });

  it('--filter=blocksize minblock=4096 over O_DIRECT: 512-byte client writes land the same', async () => {
    const ours = join(tmp.dir, 'bs-ours.img');
    const kits = join(tmp.dir, 'bs-kit.img');
    copyFileSync(disk, ours);
    copyFileSync(disk, kits);
    const base = keep(await FileDevice.open(ours, { direct: true }));
    expect(base.blockSizes?.min).toBe(4096);
    p = await pair(blocksize(base, { minBlock: 4096 }), ['--filter=blocksize', 'file', kits, 'minblock=4096']);
    const info = JSON.parse(await runOk('nbdinfo', ['--json', p.ours.uri()]));
    expect(info.exports[0].block_size_minimum).toBe(1);
    const cmds = ['write -P 0x5a 512 512', 'write -P 0x33 7000 9000', 'write -z 70000 3000', 'discard 1M 8704', 'flush'];
    for (const uri of [p.ours.uri(), p.kit.uri]) await runOk('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
    await expectSame(p.ours.uri(), p.kit.uri, tmp.dir);
  });
});
