// Small value helpers every package needs once: a value that may be a promise, powers
// of two, zero bytes (testing for them, writing them). Pure (no Node I/O), so they
// also run in a browser.
import { NbdInvalidArgumentError } from './errors.js';

/** A result that is there now, or later. Device methods return it: synchronous devices answer in the same tick. */
export type MaybePromise<T> = T | Promise<T>;

/** Whether `v` is a promise (or any thenable), i.e. must be awaited. */
export function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null | undefined)?.then === 'function';
}

/**
 * `f(value)` once `value` settles, without a promise when `value` is not one (and
 * `onError(e)` if it rejects). Not named `then`: a module exporting `then` is a thenable to import().
 */
export function after<T, U>(
  value: MaybePromise<T>,
  f: (v: T) => U | Promise<U>,
  onError?: (e: unknown) => U | Promise<U>,
): MaybePromise<U> {
  return isPromise(value) ? value.then(f, onError) : f(value);
}

/** Whether `n` is a power of two (1, 2, 4, …). */
export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

interface BufferLike {
  from(
    buf: ArrayBufferLike,
    offset: number,
    length: number,
  ): { compare(t: Uint8Array, ts: number, te: number, ss: number, se: number): number };
}
// Node's Buffer compares with memcmp (tens of GiB/s); elsewhere words are compared in JS.
const NodeBuffer = (globalThis as { Buffer?: BufferLike }).Buffer;

const ZERO_CHUNK_SIZE = 1024 * 1024;
let zeroes: Uint8Array | undefined;

/**
 * 1 MiB of zeroes, allocated once on first use and shared by everything that writes,
 * lends or compares against zeroes. Never write into it.
 */
export function zeroChunk(): Uint8Array {
  zeroes ??= new Uint8Array(ZERO_CHUNK_SIZE);
  return zeroes;
}

/**
 * Writes `length` zero bytes at `offset` through `write`, a chunk of `chunk` (default
 * {@link zeroChunk}) at a time, each once the one before settled: the one loop behind
 * emulated WRITE_ZEROES, zeroing a file by writing, zeroes sent down a stream.
 */
export async function writeZeroes(
  offset: number,
  length: number,
  write: (zeroes: Uint8Array, at: number) => MaybePromise<unknown>,
  chunk: Uint8Array = zeroChunk(),
): Promise<void> {
  if (chunk.length === 0) throw new NbdInvalidArgumentError('writeZeroes: an empty chunk');
  for (let done = 0; done < length; done += chunk.length) {
    await write(length - done < chunk.length ? chunk.subarray(0, length - done) : chunk, offset + done);
  }
}

/** Whether every byte of `b` is zero. */
export function isAllZero(b: Uint8Array): boolean {
  if (NodeBuffer !== undefined) {
    const buf = NodeBuffer.from(b.buffer, b.byteOffset, b.byteLength);
    const zero = zeroChunk();
    for (let pos = 0; pos < b.length; pos += zero.length) {
      const n = Math.min(zero.length, b.length - pos);
      if (buf.compare(zero, 0, n, pos, pos + n) !== 0) return false;
    }
    return true;
  }
  let i = 0;
  if (b.byteOffset % 4 === 0) {
    const words = new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
    for (; i < words.length; i++) if (words[i] !== 0) return false;
    i *= 4;
  }
  for (; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
