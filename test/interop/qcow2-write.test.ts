// Writing qcow2: the same qemu-io operations (unaligned and partial-cluster writes,
// overwrites of data, zero and compressed clusters, TRIM, zeroes with and without
// unmap, a large write, over a backing chain) go through our export and through that
// qemu's qemu-nbd (--discard=unmap) on two copies of one image made by qemu 7.2 or
// 10.0; then `qemu-img check` finds no error and no leak in ours and `qemu-img
// compare` finds both images equal. fio then writes through four connections at once
// (random sizes and unaligned offsets, each job verifying its quarter), and the image
// must still check clean.
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run, runOk, tempDir } from '../support/peers.js';
import { EACH_QEMU, type QemuInstall, qemuTool } from '../support/qemu.js';
import { createImage, expectCheckClean, MiB, qemuIo, qemuNbd, serveQcow } from './qcow2-support.js';

interface Variant {
  name: string;
  opts: string[];
}

const VARIANTS: Variant[] = [
  { name: 'version 3, 64 KiB clusters', opts: [] },
  { name: 'version 2 (compat=0.10)', opts: ['compat=0.10'] },
  { name: '512 B clusters, 64-bit refcounts (the refcount table grows)', opts: ['cluster_size=512', 'refcount_bits=64'] },
  { name: '2 MiB clusters', opts: ['cluster_size=2M'] },
  { name: 'extended L2, 64 KiB clusters', opts: ['extended_l2=on'] },
  { name: 'extended L2, 2 MiB clusters', opts: ['extended_l2=on', 'cluster_size=2M'] },
  { name: '1-bit refcounts, zstd', opts: ['refcount_bits=1', 'compression_type=zstd'] },
];

/** What the image holds before the test writes: data, zero and compressed clusters. */
const BEFORE = ['write -P 0x11 0 4M', 'write -z 4M 2M', 'write -c -P 0x22 8M 4M', 'write -P 0x33 40M 2M'];

/** The operations under test. */
const OPS = [
  'write -P 0xa1 1000 3000', // inside one cluster, unaligned
  'write -P 0xa2 65000 200000', // across clusters, unaligned at both ends
  'write -P 0xa3 2M 64k', // overwrite of data, aligned
  'write -P 0xa4 4194000 10000', // data into zero clusters, across the boundary
  'write -P 0xa5 9000000 5000', // into a compressed cluster
  'write -P 0xa6 16M 4M', // a large write into unallocated clusters
  'write -P 0xa7 20971000 700', // partial clusters after it
  'discard 1M 1M', // TRIM of data
  'discard 8M 2M', // TRIM of compressed clusters
  'discard 30000 7000', // a TRIM of part of a cluster (ignored)
  'write -z 3M 300000', // zeroes, unaligned end
  'write -z -u 40M 1M', // zeroes that may unmap
  'write -z 24M 64k', // zeroes over unallocated clusters
  'write -P 0xa8 40M 4096', // data into a zeroed cluster
  'write -P 0xa9 63M 1M', // the last MiB
  'flush',
];

/** Two copies of a fresh image (with BEFORE written) made by `q`. */
async function twin(q: QemuInstall, dir: string, v: Variant): Promise<[string, string]> {
  mkdirSync(dir, { recursive: true });
  const a = join(dir, 'ours.qcow2');
  const b = join(dir, 'qemu.qcow2');
  await createImage(q, a, 64 * MiB, v.opts);
  await qemuIo(q, a, BEFORE);
  copyFileSync(a, b);
  return [a, b];
}

/** Runs OPS through our export of `a` and through qemu-nbd's of `b`. */
async function sameOps(q: QemuInstall, a: string, b: string, ops: string[], backing?: 'follow'): Promise<void> {
  const ours = await serveQcow(a, backing ? { backing } : {});
  try {
    await qemuIo(q, ours.uri, ops, 'raw');
  } finally {
    await ours.stop();
  }
  const theirs = await qemuNbd(q, b, ['--discard=unmap']);
  try {
    await qemuIo(q, theirs.uri, ops, 'raw');
  } finally {
    await theirs.stop();
  }
}

async function expectEqual(q: QemuInstall, a: string, b: string): Promise<void> {
  const r = await run(qemuTool(q, 'qemu-img'), ['compare', a, b]);
  expect(r.stdout + r.stderr).toContain('Images are identical');
}

describe.each(EACH_QEMU)('qcow2 images made by qemu %s, written through our export', (_v, q: QemuInstall) => {
  const tmp = tempDir('nbd-qcow2-write-');
  afterAll(() => tmp.cleanup());

  it.each(VARIANTS)('$name: qemu-io writes, zeroes and trims: check clean, equal to qemu-nbd doing the same', async (v) => {
    const [a, b] = await twin(q, join(tmp.dir, v.name.replace(/\W+/g, '-')), v);
    await sameOps(q, a, b, OPS);
    const check = await expectCheckClean(q, a);
    expect(check).not.toMatch(/leaked/);
    await expectCheckClean(q, b);
    await expectEqual(q, a, b);
  });

  it('over a backing chain (raw <- qcow2): copy-on-write from the base, the base never written', async () => {
    const images: string[] = [];
    for (const side of ['ours', 'qemu']) {
      const dir = join(tmp.dir, `chain-${side}`);
      mkdirSync(dir, { recursive: true });
      const base = join(dir, 'base.raw');
      await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'raw', base, '48M']);
      await qemuIo(q, base, ['write -P 0xb1 0 16M', 'write -P 0xb2 30M 8M'], 'raw');
      const top = join(dir, 'top.qcow2');
      await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top, '64M']);
      images.push(top);
    }
    const [a, b] = images as [string, string];
    const baseBefore = readFileSync(join(tmp.dir, 'chain-ours', 'base.raw'));
    await sameOps(q, a, b, OPS, 'follow');
    await expectCheckClean(q, a);
    await expectEqual(q, a, b);
    expect(Buffer.compare(readFileSync(join(tmp.dir, 'chain-ours', 'base.raw')), baseBefore)).toBe(0);
  });

  it('TRIM and zeroes that may unmap give the space back to the file system', async () => {
    const dir = join(tmp.dir, 'space');
    mkdirSync(dir, { recursive: true });
    const img = join(dir, 'disk.qcow2');
    await createImage(q, img, 64 * MiB);
    const ours = await serveQcow(img);
    try {
      await qemuIo(q, ours.uri, ['write -P 1 0 32M', 'flush'], 'raw');
      const written = statSync(img).blocks * 512;
      expect(written).toBeGreaterThan(32 * MiB);
      await qemuIo(q, ours.uri, ['discard 0 16M', 'write -z -u 16M 16M', 'flush'], 'raw');
      expect(statSync(img).blocks * 512).toBeLessThan(written - 30 * MiB);
      await qemuIo(q, ours.uri, ['read -P 0 0 32M'], 'raw');
    } finally {
      await ours.stop();
    }
    await expectCheckClean(q, img);
  });

  it('fio through four connections at once (random sizes, verified), then check clean', async () => {
    const dir = join(tmp.dir, 'fio');
    const [a] = await twin(q, dir, { name: 'fio', opts: ['cluster_size=16k'] });
    const ours = await serveQcow(a);
    try {
      const r = await run(
        'fio',
        [
          '--name=qcow2',
          '--ioengine=nbd',
          `--uri=${ours.uri}`,
          '--rw=randwrite',
          '--bsrange=512-256k',
          '--bs_unaligned=1',
          '--iodepth=16',
          '--numjobs=4',
          '--size=16M',
          '--offset_increment=16M', // each connection its own quarter: fio verifies what it wrote itself
          '--verify=crc32c',
          '--do_verify=1',
          '--verify_state_save=0',
          '--randrepeat=0',
        ],
        { timeout: 180_000 },
      );
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/verify: bad|crc32c: verify failed/);
    } finally {
      await ours.stop();
    }
    await expectCheckClean(q, a);
  });
});
