// Aligned memory for O_DIRECT: the kernel transfers straight between the disk and
// the caller's memory, so the memory must start on an alignment boundary. A view
// handed to us (a WRITE payload in the server's read arena, a READ reply buffer)
// rarely is; those go through a bounce buffer taken from here.
import { addressOf } from './linux-io.js';

/** Memory alignment used for O_DIRECT transfers: a page, enough for every Linux device. */
export const DIRECT_MEMORY_ALIGN = 4096;

/** Whether `view` starts on a `align` boundary (a power of two). */
export function isAlignedMemory(view: Uint8Array, align = DIRECT_MEMORY_ALIGN): boolean {
  return addressOf(view) % align === 0;
}

/** A fresh `length`-byte view whose first byte is on a DIRECT_MEMORY_ALIGN boundary. */
export function alignedBuffer(length: number): Uint8Array {
  const whole = new Uint8Array(length + DIRECT_MEMORY_ALIGN);
  const skew = addressOf(whole) % DIRECT_MEMORY_ALIGN;
  const start = skew === 0 ? 0 : DIRECT_MEMORY_ALIGN - skew;
  return whole.subarray(start, start + length);
}

/** Bounce buffers kept for reuse, by power-of-two capacity; a few of each, so memory stays bounded. */
export class BouncePool {
  private readonly free = new Map<number, Uint8Array[]>();
  private readonly keepPerSize: number;

  constructor(keepPerSize = 4) {
    this.keepPerSize = keepPerSize;
  }

  /** An aligned buffer of at least `length` bytes (its first `length` bytes are the caller's). */
  take(length: number): Uint8Array {
    const capacity = Math.max(DIRECT_MEMORY_ALIGN, 2 ** Math.ceil(Math.log2(length)));
    return this.free.get(capacity)?.pop() ?? alignedBuffer(capacity);
  }

  /** Gives back a buffer from {@link take}. */
  give(buf: Uint8Array): void {
    let list = this.free.get(buf.length);
    if (list === undefined) {
      list = [];
      this.free.set(buf.length, list);
    }
    if (list.length < this.keepPerSize) list.push(buf);
  }
}
