// Work shared by the threads of one copy: 64 MiB chunks handed out in turn by an
// atomic counter in shared memory, so every thread takes the next one nobody has.

/** Bytes per chunk that a thread takes at a time. */
export const CHUNK = 64 * 1024 * 1024;

/** The chunks of one copy, taken in turn by every thread (the counter lives in shared memory). */
export class Chunks {
  readonly counter: Int32Array;

  constructor(
    readonly total: number,
    shared: SharedArrayBuffer = new SharedArrayBuffer(4),
  ) {
    this.counter = new Int32Array(shared);
  }

  /** The next chunk [offset, end) nobody has taken, or undefined when all are. */
  take(): [number, number] | undefined {
    const n = Atomics.add(this.counter, 0, 1);
    const offset = n * CHUNK;
    return n >= 0 && offset < this.total ? [offset, Math.min(this.total, offset + CHUNK)] : undefined;
  }

  /** No chunk is handed out any more (a thread failed). */
  stop(): void {
    Atomics.store(this.counter, 0, -(2 ** 30));
  }
}
