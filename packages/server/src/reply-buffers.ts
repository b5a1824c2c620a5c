// READ reply buffers, each with one owner at a time. The thread's ReplyBuffers owns
// the free ones; a ReadLease owns one lent buffer: the device reads into `data`, which
// follows room for the reply's head, and the lease then goes out in a reply (the
// writer gives the buffer back once the socket wrote it) or is released unsent. A
// lease ends once: ending it again does nothing, so a buffer is never free twice nor
// reused while a write may still read it. Reuse matters: a fresh 256 KiB buffer per
// reply costs an allocation, page faults and GC work.

/** Buffers of at least this size are pooled (smaller ones come from Node's slab). */
const POOL_MIN = 16 * 1024;

export class ReplyBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;

  /** Keeps at most `maxBytes` of free buffers. */
  constructor(private readonly maxBytes: number) {}

  /** A buffer with `head` bytes of room for the reply's head, then `length` bytes of data. */
  lease(head: number, length: number): ReadLease {
    const size = head + length;
    if (size < POOL_MIN) return new ReadLease(undefined, Buffer.allocUnsafe(size), head);
    return new ReadLease(this, this.take(size), head);
  }

  /** Free bytes kept (tests). */
  get freeBytes(): number {
    return this.held;
  }

  private take(size: number): Buffer {
    const b = this.free.get(size)?.pop();
    if (b === undefined) return Buffer.allocUnsafeSlow(size);
    this.held -= size;
    return b;
  }

  /** Called by a lease that ended well: its buffer is free again. */
  giveBack(b: Buffer): void {
    if (this.held + b.length > this.maxBytes) return;
    let list = this.free.get(b.length);
    if (list === undefined) {
      // Only a few sizes are common (a client's request size); forget the rest.
      if (this.free.size >= 8) {
        this.free.clear();
        this.held = 0;
      }
      list = [];
      this.free.set(b.length, list);
    }
    list.push(b);
    this.held += b.length;
  }
}

/** One READ reply buffer, lent until it is released (back for reuse) or abandoned (never reused). */
export class ReadLease {
  /** Where the device reads the data to. */
  readonly data: Uint8Array;
  private lent = true;

  constructor(
    private readonly owner: ReplyBuffers | undefined,
    /** Room for the reply's head, then `data`: what the writer sends. */
    readonly whole: Buffer,
    head: number,
  ) {
    this.data = whole.subarray(head);
  }

  /** Not yet released nor abandoned. */
  get out(): boolean {
    return this.lent;
  }

  /** Whether the buffer goes back to a pool (worth waiting for its write to finish). */
  get pooled(): boolean {
    return this.owner !== undefined;
  }

  /** Nothing reads the buffer any more: it may be reused. */
  release(): void {
    if (!this.lent) return;
    this.lent = false;
    this.owner?.giveBack(this.whole);
  }

  /** The buffer may still be read by something that failed (a dying transport): never reused. */
  abandon(): void {
    this.lent = false;
  }
}
