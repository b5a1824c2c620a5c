// The errors a qcow2 image gives: a corrupt or hostile image is EIO (at open, or on
// the request that meets the bad metadata), a feature we do not implement is
// "unsupported", both naming the image and what is wrong with it.
import { Errno, NbdErrnoError, NbdUnsupportedError } from '@nbd/protocol';

/** A structure of the image breaks the format: EIO, with the image's name and what is wrong. */
export function corrupt(image: string, message: string, cause?: unknown): NbdErrnoError {
  return new NbdErrnoError(Errno.EIO, `qcow2 ${image}: ${message}`, cause === undefined ? undefined : { cause });
}

/** A valid image using something this implementation does not do. */
export function unsupported(image: string, message: string): NbdUnsupportedError {
  return new NbdUnsupportedError(`qcow2 ${image}: ${message}`);
}

/** Bytes as "1.5 MiB" for messages. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/** An offset as qemu prints them. */
export const hex = (n: number): string => `0x${n.toString(16)}`;
