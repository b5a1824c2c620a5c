// Reply buffers for READ, reused once the socket has written them: a fresh
// 256 KiB buffer per reply costs an allocation, page faults and GC work.
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;

  constructor(private readonly maxBytes: number) {}

  take(size: number): Buffer {
    const list = this.free.get(size);
    const b = list?.pop();
    if (b !== undefined) {
      this.held -= size;
      return b;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(b: Buffer): void {
    if (this.held + b.length > this.maxBytes) return;
    let list = this.free.get(b.length);
    if (list === undefined) {
      // Only a few sizes are common (a client's request size); forget the rest.
      if (this.free.size >= 8) this.dropAll();
      list = [];
      this.free.set(b.length, list);
    }
    list.push(b);
    this.held += b.length;
  }

  private dropAll(): void {
    this.free.clear();
    this.held = 0;
  }
}
