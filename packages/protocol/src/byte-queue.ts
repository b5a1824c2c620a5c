// A FIFO of received bytes that the stream decoders read frames from.
/**
 * A FIFO of received byte slices, read without copying where possible. A slice that
 * directly follows the previous one in the same ArrayBuffer (reads landing one after
 * another in an arena) extends it, so a frame spanning such reads is still one view.
 */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // read position within chunks[0]
  /** Bytes buffered. */
  length = 0;

  /** Appends a slice (not copied: it must stay unchanged until consumed); an empty one is ignored. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const i = this.chunks.length - 1;
    const last = this.chunks[i];
    if (last !== undefined && last.buffer === chunk.buffer && last.byteOffset + last.length === chunk.byteOffset) {
      this.chunks[i] = new Uint8Array(last.buffer, last.byteOffset, last.length + chunk.length);
    } else this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The next `n` bytes without consuming them (`n` must be ≤ length). */
  peek(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    return this.copy(n, false);
  }

  /** Consumes `n` bytes (`n` ≤ length): a view when they lie in one chunk, else one copy. */
  take(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0]!;
    const avail = first.length - this.head;
    if (avail >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    return this.copy(n, true);
  }

  /** Discards up to `n` bytes; returns how many were discarded. */
  skip(n: number): number {
    const k = Math.min(n, this.length);
    this.advance(k);
    return k;
  }

  /** Everything buffered, consumed (e.g. to hand over to TLS after STARTTLS). */
  drain(): Uint8Array {
    return this.take(this.length);
  }

  private copy(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let pos = 0;
    let i = 0;
    let off = this.head;
    while (pos < n) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length - off, n - pos);
      out.set(c.subarray(off, off + k), pos);
      pos += k;
      i++;
      off = 0;
    }
    if (consume) this.advance(n);
    return out;
  }

  private advance(n: number): void {
    this.length -= n;
    while (n > 0) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      if (avail > n) {
        this.head += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.head = 0;
    }
  }
}
