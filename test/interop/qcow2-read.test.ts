// Reading qcow2: for each format option qemu-img offers (versions 2 and 3, cluster
// sizes from 512 B to 2 MiB, extended L2 subclusters, zlib and zstd compression,
// refcount widths, lazy refcounts, preallocation), an image made and written by qemu
// 7.2 and by qemu 10.0 is served by our server over a QcowDevice: `qemu-img compare`
// finds it identical to the image, and `nbdinfo --map` (base:allocation) and the
// allocation depth equal what that qemu's qemu-nbd says about the same image.
import { join } from 'node:path';
import { openQcow2 } from '@nbd/devices';
import { NbdUnsupportedError } from '@nbd/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { runOk, tempDir } from '../support/peers.js';
import { EACH_QEMU, type QemuInstall, qemuTool } from '../support/qemu.js';
import { createImage, depthLines, depthMapOf, expectSameContent, MiB, mapOf, qemuIo, qemuNbd, serveQcow } from './qcow2-support.js';

interface Variant {
  name: string;
  opts: string[];
  clusterSize: number;
  size?: number;
}

const VARIANTS: Variant[] = [
  { name: 'version 3, 64 KiB clusters (the defaults)', opts: [], clusterSize: 64 * 1024 },
  { name: 'version 2 (compat=0.10)', opts: ['compat=0.10'], clusterSize: 64 * 1024 },
  { name: '512 B clusters', opts: ['cluster_size=512'], clusterSize: 512 },
  { name: '4 KiB clusters', opts: ['cluster_size=4096'], clusterSize: 4096 },
  { name: '2 MiB clusters', opts: ['cluster_size=2M'], clusterSize: 2 * MiB },
  { name: 'extended L2, 16 KiB clusters', opts: ['extended_l2=on', 'cluster_size=16k'], clusterSize: 16 * 1024 },
  { name: 'extended L2, 64 KiB clusters', opts: ['extended_l2=on'], clusterSize: 64 * 1024 },
  { name: 'extended L2, 2 MiB clusters', opts: ['extended_l2=on', 'cluster_size=2M'], clusterSize: 2 * MiB },
  { name: 'zstd compression', opts: ['compression_type=zstd'], clusterSize: 64 * 1024 },
  { name: '1-bit refcounts', opts: ['refcount_bits=1'], clusterSize: 64 * 1024 },
  { name: '64-bit refcounts', opts: ['refcount_bits=64'], clusterSize: 64 * 1024 },
  { name: 'lazy refcounts', opts: ['lazy_refcounts=on'], clusterSize: 64 * 1024 },
  { name: 'preallocation=metadata', opts: ['preallocation=metadata'], clusterSize: 64 * 1024 },
  { name: 'preallocation=falloc', opts: ['preallocation=falloc'], clusterSize: 64 * 1024 },
  { name: 'a size that is not a multiple of the cluster size', opts: [], clusterSize: 64 * 1024, size: 64 * MiB + 3 * 512 },
];

/** Data, unaligned data, zeroes, compressed clusters, discards, and the last MiB. */
function populate(v: Variant, size: number): string[] {
  const compressed = Math.max(v.clusterSize, 128 * 1024);
  // qemu cannot write compressed clusters over preallocated ones.
  const compress = v.opts.some((o) => o.startsWith('preallocation')) ? '' : '-c ';
  return [
    'write -P 0x11 0 64k',
    'write -P 0x22 1M 3M',
    'write -P 0x33 5000000 12345',
    'write -z 8M 1M',
    `write ${compress}-P 0x44 16M ${compressed}`,
    `write ${compress}-P 0x45 ${16 * MiB + 4 * compressed} ${compressed}`,
    'write -P 0x55 20M 2M',
    'discard 20M 1M',
    'write -P 0x56 26M 4M',
    'write -z -u 27M 2M',
    `write -P 0x66 ${size - MiB} ${MiB}`,
  ];
}

describe.each(EACH_QEMU)('qcow2 images made by qemu %s, read through our export', (_v, q: QemuInstall) => {
  const tmp = tempDir('nbd-qcow2-read-');
  afterAll(() => tmp.cleanup());

  it.each(VARIANTS)('$name: same bytes, same map and allocation depth as qemu-nbd', async (v) => {
    const size = v.size ?? 64 * MiB;
    const image = join(tmp.dir, `${v.name.replace(/\W+/g, '-')}.qcow2`);
    await createImage(q, image, size, v.opts);
    await qemuIo(q, image, populate(v, size));
    const ours = await serveQcow(image, { readOnly: true });
    const theirs = await qemuNbd(q, image, ['-r']);
    try {
      expect(ours.device.clusterSize).toBe(v.clusterSize);
      await expectSameContent(q, ours.uri, image);
      expect(await mapOf(ours.uri)).toBe(await mapOf(theirs.uri));
      expect(await depthMapOf(ours.device)).toBe(depthLines(await mapOf(theirs.uri, 'qemu:allocation-depth')));
    } finally {
      await ours.stop();
      await theirs.stop();
    }
  });

  it('a backing chain raw <- qcow2 <- qcow2 by relative names, followed when allowed', async () => {
    const dir = join(tmp.dir, 'chain');
    await runOk('mkdir', ['-p', join(dir, 'sub')]);
    const base = join(dir, 'sub', 'base.raw');
    const mid = join(dir, 'mid.qcow2');
    const top = join(dir, 'top.qcow2');
    await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'raw', base, '32M']);
    await qemuIo(q, base, ['write -P 0xb1 0 8M', 'write -P 0xb2 20M 4M'], 'raw');
    await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'qcow2', '-b', 'sub/base.raw', '-F', 'raw', mid, '48M']);
    await qemuIo(q, mid, ['write -P 0xc1 2M 1M', 'write -P 0xc2 30M 2M', 'write -z 21M 1M', 'write -P 0xc3 100000 5000']);
    await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top, '64M']);
    await qemuIo(q, top, ['write -P 0xd1 4M 64k', 'write -z 6M 1M', 'discard 22M 1M', 'write -P 0xd2 60M 1M', 'write -P 0xd3 7000 300']);
    const ours = await serveQcow(top, { readOnly: true, backing: 'follow' });
    const theirs = await qemuNbd(q, top, ['-r']);
    try {
      await expectSameContent(q, ours.uri, top);
      expect(await mapOf(ours.uri)).toBe(await mapOf(theirs.uri));
      expect(await depthMapOf(ours.device)).toBe(depthLines(await mapOf(theirs.uri, 'qemu:allocation-depth')));
      expect((await depthMapOf(ours.device)).split('\n').some((l) => l.endsWith(' 3'))).toBe(true);
    } finally {
      await ours.stop();
      await theirs.stop();
    }
    // Not followed unless allowed; 'none' serves the top layer alone, as qemu's backing=null.
    await expect(openQcow2(top, { readOnly: true })).rejects.toThrow(/has a backing file "mid.qcow2".*backing: 'follow'/);
    const alone = await serveQcow(top, { readOnly: true, backing: 'none' });
    try {
      await expectSameContent(q, alone.uri, `json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"${top}"}}`);
    } finally {
      await alone.stop();
    }
  });

  it('an encrypted image is refused with a clear message', async () => {
    const image = join(tmp.dir, 'luks.qcow2');
    await runOk(qemuTool(q, 'qemu-img'), [
      'create',
      '-q',
      '-f',
      'qcow2',
      '--object',
      'secret,id=sec0,data=hunter2',
      '-o',
      'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10',
      image,
      '4M',
    ]);
    const err = await openQcow2(image, { readOnly: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdUnsupportedError);
    expect((err as Error).message).toMatch(/luks\.qcow2: the image is encrypted \(LUKS\)/);
  });
});
