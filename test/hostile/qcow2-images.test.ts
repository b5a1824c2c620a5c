// The hostile-input table, qcow2 images: each row is an image crafted byte by byte
// (test/support/qcow2-craft.ts) to break one rule of the format, what qemu does with
// it (its 2014 qcow2 hardening, CVE-2014-0143/-0144/-0147, is the checklist), and what
// we do: refuse it at open with a message naming the problem, or answer EIO on the
// read (or write) that meets it. Each image is opened in a process of its own, which
// must finish within 20 s with a peak RSS under 150 MiB: no hang, no huge allocation.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { runOk, tempDir } from '../support/peers.js';
import {
  At,
  CLUSTER,
  COMPRESSED_BYTE,
  type Crafted,
  compressedDescriptor,
  craft,
  DATA_BYTE,
  featureName,
  Guest,
  VIRTUAL_SIZE,
  withBacking,
  withExtensions,
} from '../support/qcow2-craft.js';

const child = fileURLToPath(new URL('./qcow2-child.mjs', import.meta.url));
const MAX_RSS_MIB = 150;

interface Result {
  open: string | null;
  read: string | null;
  write: string | null;
  digest: string | null;
  maxRssMiB: number;
}

interface ImageCase {
  /** What the image holds. */
  image: string;
  /** What qemu does with it. */
  qemu: string;
  /** What we do. */
  we: 'refused at open' | 'EIO on read' | 'EIO on write' | 'served';
  /** The crafted image: a patch of the valid one, or files written into `dir` (returns the top image's path). */
  patch?: (img: Crafted) => void;
  files?: (dir: string) => string;
  mode?: 'read' | 'write' | 'follow';
  writeAt?: number;
  /** The error expected (at open, read or write, as `we` says). */
  error?: RegExp;
}

const u32 = (img: Crafted, at: number, v: number) => img.view.setUint32(at, v);
const EIO = /NbdErrnoError: EIO \(Input\/output error\): qcow2 /;

const cases: ImageCase[] = [
  {
    image: 'a valid image (a data cluster and a compressed one), as the builder makes it',
    qemu: 'qemu-img check: no errors',
    we: 'served',
  },
  {
    image: 'a header cut after 40 bytes',
    qemu: 'fails reading the header',
    we: 'refused at open',
    files: (dir) => file(dir, 'short.qcow2', craft().subarray(0, 40)),
    error: /truncated header: the file is 40 bytes/,
  },
  {
    image: 'a version 3 header whose header_length (4096) runs past the end of a 2 KiB file',
    qemu: 'refuses header_length beyond the file or cluster',
    we: 'refused at open',
    files: (dir) => file(dir, 'hl.qcow2', craft((i) => u32(i, 100, 4096)).subarray(0, 2048)),
    error: /truncated header: the file is 2 KiB, header_length says 4096/,
  },
  {
    image: 'header_length 105 (not a multiple of 8)',
    qemu: '"qcow2_header too small" / must be a multiple of 8',
    we: 'refused at open',
    patch: (i) => u32(i, 100, 105),
    error: /header_length 105 is not a multiple of 8/,
  },
  {
    image: 'version 4',
    qemu: '"Unsupported qcow2 version 4"',
    we: 'refused at open',
    patch: (i) => u32(i, 4, 4),
    error: /NbdUnsupportedError: qcow2 .*: qcow2 version 4/,
  },
  {
    image: 'cluster_bits 31 (2 GiB clusters)',
    qemu: '"Unsupported cluster size: 2^31" (limit 2 MiB)',
    we: 'refused at open',
    patch: (i) => u32(i, 20, 31),
    error: /cluster_bits 31 is outside 9..21/,
  },
  {
    image: 'an L1 table of 2^31 - 1 entries (16 GiB)',
    qemu: 'CVE-2014-0143: "Active L1 table too large" (32 MiB limit)',
    we: 'refused at open',
    patch: (i) => u32(i, 36, 0x7fffffff),
    error: /the L1 table is 16.0 GiB, more than qemu's limit of 32 MiB/,
  },
  {
    image: 'an L1 table too small for the virtual size (1 entry for 1 PiB)',
    qemu: 'CVE-2014-0143: "L1 table is too small"',
    we: 'refused at open',
    patch: (i) => i.u64(24, 2 ** 50),
    error: /the L1 table has 1 entries, the virtual size 1 PiB needs 2097152/,
  },
  {
    image: 'an L1 table at 1 TiB, far past the end of the file',
    qemu: 'reads past EOF fail later; we check the table against the file first',
    we: 'refused at open',
    patch: (i) => i.u64(40, 2 ** 40),
    error: /the L1 table \(8 bytes at 0x10000000000\) lies beyond the end of the file/,
  },
  {
    image: 'a refcount table of 2^32 - 1 clusters',
    qemu: 'CVE-2014-0144: "Reference count table too large" (8 MiB limit)',
    we: 'refused at open',
    patch: (i) => u32(i, 56, 0xffffffff),
    error: /the refcount table is .* more than qemu's limit of 8 MiB/,
  },
  {
    image: 'a refcount table past the end of the file',
    qemu: 'CVE-2014-0144: validate_table_offset (alignment, overflow)',
    we: 'refused at open',
    patch: (i) => i.u64(48, 2 ** 40),
    error: /the refcount table \(64 KiB at 0x10000000000\) lies beyond the end of the file/,
  },
  {
    image: 'the L1 table on top of the refcount table',
    qemu: 'CVE-2014-0147: qcow2_check_metadata_overlap refuses',
    we: 'refused at open',
    patch: (i) => i.u64(40, At.reftable),
    error: /overlaps the (refcount table|L1 table)/,
  },
  {
    image: 'an L1 entry pointing its L2 table past the end of the file',
    qemu: 'EIO when the L2 table is read',
    we: 'refused at open',
    patch: (i) => i.u64(At.l1, (2n ** 40n) | (1n << 63n)),
    error: /L1 entry 0: the L2 table at 0x10000000000 lies beyond the end of the file/,
  },
  {
    image: 'an L2 table that is also the refcount block',
    qemu: 'overlap check: the image is marked corrupt',
    we: 'refused at open',
    patch: (i) => i.u64(At.l1, BigInt(At.refblock) | (1n << 63n)),
    error: /cluster 0x20000 is used twice as metadata/,
  },
  {
    image: 'an L2 table inside the refcount table',
    qemu: 'overlap check: the image is marked corrupt',
    we: 'refused at open',
    patch: (i) => i.u64(At.l1, BigInt(At.reftable) | (1n << 63n)),
    error: /an L2 table at 0x10000 overlaps the refcount table/,
  },
  {
    image: 'an L1 entry with reserved bits set',
    qemu: 'qemu-img check reports it; we refuse',
    we: 'refused at open',
    patch: (i) => i.u64(At.l1, BigInt(At.l2) | 0x1ffn),
    error: /L1 entry 0 has reserved bits set/,
  },
  {
    image: 'a data cluster at 1 TiB, past the end of the file',
    qemu: 'reads past EOF as zeroes; we refuse the read',
    we: 'EIO on read',
    patch: (i) => i.u64(At.l2, (2n ** 40n) | (1n << 63n)),
    error: /guest offset 0x0 maps to 0x10000000000, past the end of the file/,
  },
  {
    image: 'an L2 entry with reserved bits set (an unaligned host offset)',
    qemu: '"Cluster allocation offset ... unaligned": marked corrupt, EIO',
    we: 'EIO on read',
    patch: (i) => i.u64(At.l2, BigInt(At.data + 0x100) | (1n << 63n)),
    error: /L2 entry for guest offset 0x0 has reserved bits set/,
  },
  {
    image: 'a compressed cluster past the end of the file',
    qemu: 'EIO',
    we: 'EIO on read',
    patch: (i) => i.u64(At.l2 + 8, compressedDescriptor(2 ** 40, 100)),
    error: /compressed cluster at guest offset 0x10000 points to 0x10000000000, outside the file/,
  },
  {
    image: 'a compressed cluster whose data is not deflate',
    qemu: 'EIO (inflate fails)',
    we: 'EIO on read',
    patch: (i) => i.bytes.fill(0xff, At.compressed, At.compressed + 512),
    error: /a compressed cluster does not decompress \(zlib\)/,
  },
  {
    image: 'a compressed cluster claiming one sector of a 10 KiB deflate stream (length out of range)',
    qemu: 'EIO: the stream ends before a whole cluster',
    we: 'EIO on read',
    patch: (i) => {
      const random = deflateRawSync(Uint8Array.from({ length: CLUSTER }, (_, k) => (k * 2654435761) >>> 24));
      i.bytes.set(random.subarray(0, CLUSTER), At.compressed);
      i.u64(At.l2 + 8, compressedDescriptor(At.compressed, 0, 0));
    },
    error: /a compressed cluster (decompresses to \d+ bytes, not 65536|does not decompress)/,
  },
  {
    image: 'a deflate bomb: 128 KiB that would inflate to 120 MiB',
    qemu: 'inflates at most one cluster',
    we: 'EIO on read',
    patch: (i) => {
      const bomb = deflateRawSync(new Uint8Array(120 * 1024 * 1024));
      i.ensure(At.compressed + bomb.length);
      i.bytes.set(bomb, At.compressed);
      i.u64(At.l2 + 8, compressedDescriptor(At.compressed, 2 * CLUSTER, 255));
    },
    error: /a compressed cluster does not decompress \(zlib\): Cannot create a Buffer larger than 65536 bytes/,
  },
  {
    image: 'an unknown incompatible feature bit (bit 40, named in the feature name table)',
    qemu: '"Unsupported qcow2 feature(s): future-feature"',
    we: 'refused at open',
    patch: (i) => {
      i.u64(72, 1n << 40n);
      withExtensions(i, [[0x6803f857, featureName(0, 40, 'future-feature')]]);
    },
    error: /NbdUnsupportedError: qcow2 .*: unknown incompatible feature\(s\): bit 40 "future-feature"/,
  },
  {
    image: 'AES encryption (crypt_method 1)',
    qemu: 'opens only with a key (and refuses AES for writing)',
    we: 'refused at open',
    patch: (i) => u32(i, 32, 1),
    error: /the image is encrypted \(AES\)/,
  },
  {
    image: 'an external data file (incompatible bit 2)',
    qemu: 'opens the data file by name',
    we: 'refused at open',
    patch: (i) => i.u64(72, 4n),
    error: /an external data file \(data_file=\) is not supported/,
  },
  {
    image: 'a header extension whose length runs past the first cluster',
    qemu: 'CVE-2014-0144: "Invalid extension length"',
    we: 'refused at open',
    patch: (i) => {
      u32(i, 112, 0xe2792aca);
      u32(i, 116, 0xfffffff0);
    },
    error: /header extension 0xe2792aca \(4294967280 bytes\) overruns the first cluster/,
  },
  {
    image: 'a backing file name of 4000 bytes',
    qemu: 'CVE-2014-0144: "Backing file name too long" (1023)',
    we: 'refused at open',
    patch: (i) => withBacking(i, 'x'.repeat(4000)),
    error: /backing file name length 4000 is outside 1..1023/,
  },
  {
    image: 'a backing file name that starts past the first cluster',
    qemu: 'CVE-2014-0144: the name must fit in the first cluster',
    we: 'refused at open',
    patch: (i) => withBacking(i, 'base.raw', CLUSTER - 4),
    error: /the backing file name \(8 bytes at 0xfffc\) is outside the first cluster/,
  },
  {
    image: 'a backing file loop: a.qcow2 -> b.qcow2 -> a.qcow2 (followed)',
    qemu: '"Recursive backing file" / too deep',
    we: 'refused at open',
    mode: 'follow',
    files: (dir) => {
      file(
        dir,
        'b.qcow2',
        craft((i) => withBacking(i, 'a.qcow2')),
      );
      return file(
        dir,
        'a.qcow2',
        craft((i) => withBacking(i, 'b.qcow2')),
      );
    },
    error: /backing file loop: .*a\.qcow2 -> .*b\.qcow2 -> .*a\.qcow2/,
  },
  {
    image: 'a backing file that names /etc/passwd, not followed (backing: none)',
    qemu: 'follows it unless told backing=null',
    we: 'served',
    patch: (i) => withBacking(i, '/etc/passwd'),
  },
  {
    image: 'extended L2 entries with 4 KiB clusters',
    qemu: '"Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"',
    we: 'refused at open',
    patch: (i) => {
      i.u64(72, 16n);
      u32(i, 20, 12);
    },
    error: /extended L2 entries need clusters of at least 16 KiB/,
  },
  {
    image: 'refcount_order 7 (128-bit refcounts)',
    qemu: '"Refcount width must be a power of two and may not exceed 64 bits"',
    we: 'refused at open',
    patch: (i) => u32(i, 96, 7),
    error: /refcount_order 7 is larger than 6/,
  },
  {
    image: '2^32 - 1 internal snapshots',
    qemu: 'CVE-2014-0143: "Too many snapshots"',
    we: 'refused at open',
    patch: (i) => {
      u32(i, 60, 0xffffffff);
      i.u64(64, 7 * CLUSTER);
    },
    error: /4294967295 snapshots, more than qemu's limit of 65536/,
  },
  {
    image: 'compression type 5 with the compression bit',
    qemu: '"Unknown compression type 5"',
    we: 'refused at open',
    patch: (i) => {
      i.u64(72, 8n);
      i.view.setUint8(104, 5);
    },
    error: /compression type 5 \(only 0 zlib and 1 zstd exist\)/,
  },
  {
    image: 'a virtual size of 2^60 bytes (past 2^53)',
    qemu: 'opens it (L1 permitting)',
    we: 'refused at open',
    patch: (i) => i.u64(24, 2n ** 60n),
    error: /virtual size .* is larger than 2\^53 bytes/,
  },
  {
    image: 'a refcount table entry pointing past the end of the file',
    qemu: 'EIO when the block is needed',
    we: 'refused at open',
    patch: (i) => i.u64(At.reftable + 8, 2n ** 40n),
    error: /refcount table entry 1: the refcount block at 0x10000000000 lies beyond the end of the file/,
  },
  {
    image: 'a data cluster that is the L1 table, written to',
    qemu: 'CVE-2014-0147: the overlap check refuses the write, the image is marked corrupt',
    we: 'EIO on write',
    mode: 'write',
    writeAt: Guest.data,
    patch: (i) => i.u64(At.l2, BigInt(At.l1) | (1n << 63n)),
    error: /guest offset 0x0 maps to 0x30000, which holds the L1 table/,
  },
  {
    image: 'no refcount block for the header (refcount table entry 0 is 0), written to',
    qemu: 'refcount 0 for metadata: corrupt',
    we: 'EIO on write',
    mode: 'write',
    writeAt: 2 * CLUSTER,
    patch: (i) => i.u64(At.reftable, 0),
    error: /cluster 0x0 holds the header but has no refcount block/,
  },
  {
    image: 'a subcluster both allocated and zero (extended L2)',
    qemu: 'QCOW2_SUBCLUSTER_INVALID: EIO, marked corrupt',
    we: 'EIO on read',
    patch: (i) => {
      i.u64(72, 16n);
      i.u64(At.l2, BigInt(At.data) | (1n << 63n));
      i.u64(At.l2 + 8, (1n << 32n) | 1n);
      i.u64(At.l2 + 16, 0);
    },
    error: /L2 entry for guest offset 0x0 has an invalid subcluster bitmap/,
  },
];

describe('hostile qcow2 images', () => {
  const tmp = tempDir('nbd-qcow2-hostile-');
  afterAll(() => tmp.cleanup());
  const expectedDigest = createHash('sha256')
    .update(
      (() => {
        const b = new Uint8Array(VIRTUAL_SIZE);
        b.fill(DATA_BYTE, Guest.data, Guest.data + CLUSTER);
        b.fill(COMPRESSED_BYTE, Guest.compressed, Guest.compressed + CLUSTER);
        return b;
      })(),
    )
    .digest('hex');

  it('the valid image of the builder is one qemu-img check accepts', async () => {
    const path = file(tmp.dir, 'valid.qcow2', craft());
    expect(await runOk('qemu-img', ['check', path])).toContain('No errors were found on the image');
  });

  it.each(cases.map((c, n) => ({ ...c, n })))('$image → $we (qemu: $qemu)', async (c) => {
    const dir = join(tmp.dir, `case-${c.n}`);
    await runOk('mkdir', ['-p', dir]);
    const path = c.files ? c.files(dir) : file(dir, 'image.qcow2', craft(c.patch));
    const r = await openInChild(path, c.mode ?? 'read', c.writeAt ?? 0);
    expect(r.maxRssMiB).toBeLessThan(MAX_RSS_MIB);
    if (c.we === 'refused at open') {
      expect(r.open).toMatch(c.error!);
      return;
    }
    expect(r.open).toBeNull();
    if (c.we === 'served') {
      expect(r.read).toBeNull();
      expect(r.digest).toBe(expectedDigest);
    } else if (c.we === 'EIO on read') {
      expect(r.read).toMatch(EIO);
      expect(r.read).toMatch(c.error!);
    } else {
      expect(r.write).toMatch(EIO);
      expect(r.write).toMatch(c.error!);
    }
  });
});

function file(dir: string, name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

function openInChild(path: string, mode: string, writeAt: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [child, path, mode, String(writeAt)], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`child: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Result);
    });
  });
}
