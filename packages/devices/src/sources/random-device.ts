// nbdkit's random plugin: a non-sparse disk of pseudo-random bytes, the same for a
// seed. Byte i is the low byte of the third output of xoshiro256** seeded with
// seed + i (nbdkit's algorithm, so both serve identical bytes). Writes are accepted
// only when they match what is there (to test copying tools onto the same device).
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device, DeviceRecipe } from '@nbd/server';
import { DeviceOptionError } from '../option-error.js';
import { checkSize } from './null-device.js';
import { Xoshiro256 } from './prng.js';
import { sourceRecipe } from './source-recipe.js';

/** Options of the random sources. */
export interface RandomOptions {
  /** A uint32, as nbdkit's `seed=`; default: the current time in seconds (as nbdkit). */
  seed?: number;
}

/** The seed option checked (a uint32), or the time in seconds. */
export function seedOf(seed: number | undefined, what: string): number {
  if (seed === undefined) return Math.floor(Date.now() / 1000) >>> 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new DeviceOptionError(what, 'is not a uint32', { option: 'seed', value: seed });
  return seed;
}

/** Fills `buf` with nbdkit random-plugin bytes for `offset`. */
export function fillRandom(buf: Uint8Array, offset: number, seed: number, rng = new Xoshiro256()): void {
  for (let i = 0; i < buf.length; i++) {
    rng.reseed(seed + offset + i);
    rng.next();
    rng.next();
    buf[i] = rng.next() & 0xff;
  }
}

/** Compares `buf` with what `fill` puts at `offset`, a megabyte at a time; EIO on the first difference. */
export function verifyWrite(buf: Uint8Array, offset: number, fill: (b: Uint8Array, at: number) => void): void {
  const chunk = new Uint8Array(Math.min(buf.length, 1024 * 1024));
  for (let pos = 0; pos < buf.length; pos += chunk.length) {
    const n = Math.min(chunk.length, buf.length - pos);
    const want = chunk.subarray(0, n);
    fill(want, offset + pos);
    const got = buf.subarray(pos, pos + n);
    for (let i = 0; i < n; i++)
      if (got[i] !== want[i])
        throw new NbdErrnoError(Errno.EIO, `data written at ${offset + pos + i} does not match what the device holds`);
  }
}

/** nbdkit's random plugin. */
export class RandomDevice implements Device {
  readonly size: number;
  readonly seed: number;
  readonly multiConn = true;
  private readonly rng = new Xoshiro256();

  constructor(size: number, opts: RandomOptions = {}) {
    this.size = checkSize(size, 'RandomDevice');
    this.seed = seedOf(opts.seed, 'RandomDevice');
  }

  readAt(buf: Uint8Array, offset: number): void {
    fillRandom(buf, offset, this.seed, this.rng);
  }

  /** Accepted only if `buf` is exactly what the device holds there (EIO otherwise). */
  writeAt(buf: Uint8Array, offset: number): void {
    verifyWrite(buf, offset, (b, at) => fillRandom(b, at, this.seed, this.rng));
  }

  /** A random disk has no holes: trim fails with EIO (as nbdkit). */
  trim(): void {
    throw new NbdErrnoError(Errno.EIO, 'a random disk cannot be trimmed');
  }

  /** A random disk has no zeroes to make: EIO (as nbdkit). */
  zero(): void {
    throw new NbdErrnoError(Errno.EIO, 'a random disk cannot be zeroed');
  }

  cache(): void {}

  share(): DeviceRecipe {
    return sourceRecipe({ kind: 'random', size: this.size, seed: this.seed });
  }
}
