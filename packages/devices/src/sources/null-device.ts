// nbdkit's null and zero plugins: a device that reads as zeroes. NullDevice takes
// writes and throws them away; ZeroDevice is read-only.
import { NbdInvalidArgumentError, ZERO_HOLE } from '@nbd/protocol';
import type { Device, DeviceExtent, DeviceRecipe, Loan } from '@nbd/server';
import { sourceRecipe } from './source-recipe.js';

const LEND_CHUNK = 1024 * 1024;
const zeroes = new Uint8Array(LEND_CHUNK);
const noRelease = (): void => {};

/** A safe integer ≥ 0, or an NbdInvalidArgumentError naming `what`. */
export function checkSize(size: number, what: string): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`${what}: bad size ${size}`);
  return size;
}

/** Reads as zeroes, all one hole; shared by NullDevice and ZeroDevice. */
abstract class ZeroesDevice implements Device {
  readonly size: number;
  readonly multiConn = true;

  constructor(size: number, what: string) {
    this.size = checkSize(size, what);
  }

  readAt(buf: Uint8Array): void {
    buf.fill(0);
  }

  /** One shared megabyte of zeroes, as many times as needed. */
  lend(_offset: number, length: number): Loan {
    const views: Uint8Array[] = [];
    for (let done = 0; done < length; done += LEND_CHUNK) views.push(zeroes.subarray(0, Math.min(LEND_CHUNK, length - done)));
    return { views, release: noRelease };
  }

  cache(): void {}

  extents(_offset: number, length: number): DeviceExtent[] {
    return [{ length, flags: ZERO_HOLE }];
  }

  abstract share(): DeviceRecipe;
}

/** nbdkit's null plugin: reads as zeroes, writes vanish, every zero and trim succeeds at once. */
export class NullDevice extends ZeroesDevice {
  readonly fua = true;

  constructor(size = 0) {
    super(size, 'NullDevice');
  }

  writeAt(): void {}
  sync(): void {}
  trim(): void {}
  zero(): void {}

  share(): DeviceRecipe {
    return sourceRecipe({ kind: 'null', size: this.size });
  }
}

/**
 * A read-only device of zeroes. nbdkit's zero plugin is always 0 bytes long (the
 * default here); a size makes it a read-only /dev/zero.
 */
export class ZeroDevice extends ZeroesDevice {
  readonly readOnly = true;

  constructor(size = 0) {
    super(size, 'ZeroDevice');
  }

  share(): DeviceRecipe {
    return sourceRecipe({ kind: 'zero', size: this.size });
  }
}
