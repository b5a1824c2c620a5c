// Sizes as people type them (nbdkit's and qemu's habits: `1G`, `64M`, `512`, `4KiB`,
// `2s` for sectors) and as nbdinfo prints them (`1M`, or plain bytes).
import { UsageError } from './errors.js';

const SHIFT: Record<string, number> = { b: 0, s: 9, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };

/**
 * Bytes from a size string: a whole or decimal number, optionally followed by `b`
 * (bytes), `s` (512-byte sectors), `K`, `M`, `G`, `T`, `P`, `E` (powers of 1024;
 * `KiB`, `KB` and `k` are the same). The result must be a whole number of bytes
 * within 2^53 - 1. A bad string is a UsageError of `command` naming `what`.
 */
export function parseSize(command: string, what: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([bskmgtpe])(?:i?b)?)?\s*$/i.exec(text);
  if (!m) throw new UsageError(command, `${what}: ${whyNotASize(text)}`);
  const n = Number(m[1]) * 2 ** SHIFT[(m[2] ?? 'b').toLowerCase()]!;
  if (!Number.isSafeInteger(n)) {
    const why = Number.isInteger(n) ? 'is larger than 2^53 - 1 bytes' : 'is not a whole number of bytes';
    throw new UsageError(command, `${what}: size '${text}' ${why}`);
  }
  return n;
}

/** Why `text` is not a size, in the user's terms: its sign, its suffix, or its shape. */
function whyNotASize(text: string): string {
  if (/^\s*-/.test(text)) return `bad size '${text}': sizes cannot be negative`;
  const suffix = /^\s*\d+(?:\.\d+)?\s*([a-z]+)\s*$/i.exec(text)?.[1];
  if (suffix !== undefined) return `bad size '${text}': unknown suffix '${suffix}' (use K, M, G, T, P or E, or s for 512-byte sectors)`;
  return `bad size '${text}' (a number of bytes, optionally followed by K, M, G, T, P or E)`;
}

/**
 * nbdinfo's `export-size-str`: the size in the largest power of 1024 that divides it
 * (`1M`, `3G`, `1536K`), or plain bytes when none does.
 */
export function humanSize(bytes: number): string {
  if (bytes === 0) return '0';
  const units = ['', 'K', 'M', 'G', 'T', 'P', 'E'];
  let i = 0;
  let n = BigInt(bytes);
  while (i < units.length - 1 && n % 1024n === 0n) {
    n /= 1024n;
    i++;
  }
  return `${n}${units[i]}`;
}

/** A rounded size for people: `512 B`, `1.5 KiB`, `8.0 GiB`. */
export function roundedSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(1)} ${units[i]}`;
}
