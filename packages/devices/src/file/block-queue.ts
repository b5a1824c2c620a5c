// What a Linux block device can do, as its request queue tells sysfs: whether it
// discards, whether it zeroes without writing (so a fast zero is possible), and
// whether it spins. A partition's queue is its whole disk's.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The queue limits FileDevice reads for a block device. */
export interface BlockQueue {
  /** The device accepts discards (BLKDISCARD): `discard_max_bytes` > 0. */
  discard: boolean;
  /** The device zeroes in hardware (REQ_OP_WRITE_ZEROES): `write_zeroes_max_bytes` > 0. */
  writeZeroes: boolean;
  /** `rotational` is 1. */
  rotational: boolean;
}

/** Major and minor numbers of a `st_rdev` (glibc's gnu_dev_major / gnu_dev_minor). */
export function majorMinor(rdev: number): { major: number; minor: number } {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return { major, minor };
}

function readNumber(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The queue of the block device `rdev`; everything false when sysfs does not say. */
export function blockQueue(rdev: number): BlockQueue {
  const { major, minor } = majorMinor(rdev);
  const dev = `/sys/dev/block/${major}:${minor}`;
  const queue = existsSync(join(dev, 'queue')) ? join(dev, 'queue') : join(dev, '..', 'queue');
  return {
    discard: (readNumber(join(queue, 'discard_max_bytes')) ?? 0) > 0,
    writeZeroes: (readNumber(join(queue, 'write_zeroes_max_bytes')) ?? 0) > 0,
    rotational: readNumber(join(queue, 'rotational')) === 1,
  };
}
