// One async lock: the holder runs alone among holders; others queue in order.

export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  private held = false;

  /** True while someone holds the lock. */
  get locked(): boolean {
    return this.held;
  }

  /** Runs `f` alone among callers of `run`, in call order. */
  async run<T>(f: () => Promise<T> | T): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    this.held = true;
    try {
      return await f();
    } finally {
      this.held = false;
      release();
    }
  }
}
