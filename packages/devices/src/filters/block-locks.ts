// Locks on blocks for read-modify-write (cow, blocksize): two writes to different
// bytes of one block must not both read the old block and write it back. The
// lock words live in a SharedArrayBuffer, so worker threads sharing a device lock
// the same blocks; waiting is Atomics.waitAsync (the event loop keeps running).
import { NbdInvalidArgumentError } from '@nbd/protocol';

/** Blocks map onto this many lock words (two blocks may share one: harmless, only slower). */
const DEFAULT_STRIPES = 4096;
/** A waiter looks again after this long even without a wake-up (a safety net, never the mechanism). */
const RECHECK_MS = 1000;

/** Per-block locks over shared memory (striped: block mod 4096). */
export class BlockLocks {
  /** The lock words, to hand to worker threads. */
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;

  /** New locks, or (given `buffer` from another thread's `buffer`) the same locks. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(DEFAULT_STRIPES * 4);
    if (this.buffer.byteLength === 0 || this.buffer.byteLength % 4 !== 0) throw new NbdInvalidArgumentError('BlockLocks: bad lock buffer');
    this.words = new Int32Array(this.buffer);
  }

  /** Locks every block of `blocks` (in one order, so two callers never deadlock); resolves with the unlock. */
  async lock(blocks: Iterable<number>): Promise<() => void> {
    const stripes = [...new Set([...blocks].map((b) => b % this.words.length))].sort((a, b) => a - b);
    const held: number[] = [];
    try {
      for (const s of stripes) {
        await this.take(s);
        held.push(s);
      }
    } catch (e) {
      this.release(held);
      throw e;
    }
    let open = true;
    return () => {
      if (open) this.release(held);
      open = false;
    };
  }

  private async take(stripe: number): Promise<void> {
    for (;;) {
      if (Atomics.compareExchange(this.words, stripe, 0, 1) === 0) return;
      const w = Atomics.waitAsync(this.words, stripe, 1, RECHECK_MS);
      if (w.async) await w.value;
    }
  }

  private release(stripes: number[]): void {
    for (const s of stripes) {
      Atomics.store(this.words, s, 0);
      Atomics.notify(this.words, s, 1);
    }
  }
}
