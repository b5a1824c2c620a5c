// Turns the engine's reply values into bytes on the transport: simple replies or
// chunks as negotiated, READ buffers from a pool (reused once written), writes of
// one tick corked together (a burst of replies is one writev), and watermarks on
// the bytes queued so a client that does not read its replies pauses our reading
// instead of growing our memory.
import { Command, encodeChunk, readReplyHeadSize, Size, type Transport, writeReadReplyHead, writeSimpleReply } from '@nbd/protocol';
import { BufferPool } from './buffer-pool.js';
import type { Reply, ReplyOut } from './replies.js';

/** READ reply buffers of at least this size are pooled (smaller ones come from Node's slab). */
const POOL_MIN = 16 * 1024;
const pool = new BufferPool(32 * 1024 * 1024);
/**
 * Reply bytes queued before reading pauses, and the level at which it resumes. Small on
 * purpose: replies waiting in our memory only add cache misses; requests waiting in the
 * kernel's socket buffer cost nothing.
 */
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

export class ReplyWriter implements ReplyOut {
  private corked = false;
  private readonly head: number;
  private readonly highWater: number;

  constructor(
    private readonly transport: Transport,
    private readonly negotiated: { structured: boolean; extended: boolean },
    /** Queued bytes fell below the low watermark (reading may resume). */
    private readonly onLowWater: () => void,
    maxQueued = HIGH_WATER,
  ) {
    this.head = readReplyHeadSize(negotiated.structured, negotiated.extended);
    this.highWater = Math.min(maxQueued, HIGH_WATER);
  }

  /** Too many reply bytes are queued: stop reading requests. */
  get congested(): boolean {
    return this.transport.writableLength >= this.highWater;
  }

  readBuffer(length: number): Uint8Array {
    const size = this.head + length;
    const buf = size >= POOL_MIN ? pool.take(size) : Buffer.allocUnsafe(size);
    return buf.subarray(this.head);
  }

  discard(data: Uint8Array): void {
    const whole = this.whole(data);
    if (whole.length >= POOL_MIN) pool.give(whole);
  }

  send(r: Reply): void {
    const { structured, extended } = this.negotiated;
    switch (r.kind) {
      case 'ok':
        if (extended) this.write(encodeChunk(r.cookie, { kind: 'none' }, { extended, offset: r.offset }));
        else this.write(simple(r.cookie, 0));
        return;
      case 'error':
        // Chunks where the request's reply must (extended) or may carry one; a simple reply elsewhere.
        if (extended || (structured && (r.type === Command.READ || r.type === Command.BLOCK_STATUS))) {
          this.write(encodeChunk(r.cookie, { kind: 'error', error: r.errno, message: r.message }, { extended, offset: r.offset }));
        } else this.write(simple(r.cookie, r.errno));
        return;
      case 'data': {
        const whole = this.whole(r.data);
        writeReadReplyHead(whole, 0, { cookie: r.cookie, offset: r.offset, length: r.data.length, structured, extended });
        this.sendPooled(whole);
        return;
      }
      case 'loan': {
        const h = new Uint8Array(this.head);
        let length = 0;
        for (const v of r.views) length += v.length;
        writeReadReplyHead(h, 0, { cookie: r.cookie, offset: r.offset, length, structured, extended });
        this.write(h);
        const last = r.views.length - 1;
        for (let i = 0; i < last; i++) this.write(r.views[i]!);
        this.write(r.views[last]!, (ok) => {
          r.release();
          if (ok) this.maybeLow();
        });
        return;
      }
      case 'segments':
        r.segments.forEach((seg, i) => {
          const done = i === r.segments.length - 1;
          if ('hole' in seg) {
            const hole = { kind: 'offset-hole', offset: BigInt(seg.offset), size: seg.hole } as const;
            this.write(encodeChunk(r.cookie, hole, { done, extended, offset: r.offset }));
            return;
          }
          const whole = this.whole(seg.data);
          writeReadReplyHead(whole, 0, {
            cookie: r.cookie,
            offset: r.offset,
            dataOffset: BigInt(seg.offset),
            length: seg.data.length,
            structured,
            extended,
            done,
          });
          this.sendPooled(whole);
        });
        return;
      case 'block-status': {
        const descriptors = r.extents.map((e) => ({ length: BigInt(e.length), flags: e.flags }));
        const kind = extended ? 'block-status-ext' : 'block-status';
        r.contextIds.forEach((contextId, i) => {
          const done = i === r.contextIds.length - 1;
          this.write(encodeChunk(r.cookie, { kind, contextId, extents: descriptors }, { done, extended, offset: r.offset }));
        });
        return;
      }
    }
  }

  /** The buffer `readBuffer` allocated around `data` (the reply head goes in front). */
  private whole(data: Uint8Array): Buffer {
    return Buffer.from(data.buffer, data.byteOffset - this.head, this.head + data.length);
  }

  private sendPooled(whole: Buffer): void {
    if (whole.length < POOL_MIN) {
      this.write(whole);
      return;
    }
    this.write(whole, (ok) => {
      // A failed write may leave the buffer referenced by the dying transport: not reused.
      if (!ok) return;
      pool.give(whole);
      this.maybeLow();
    });
  }

  /** `done(ok)` runs once the transport is done with `bytes`: false when dropped or failed. */
  private write(bytes: Uint8Array, done?: (ok: boolean) => void): void {
    const t = this.transport;
    if (t.closed) {
      done?.(false);
      return;
    }
    if (!this.corked) {
      this.corked = true;
      t.cork();
      process.nextTick(this.uncork);
    }
    t.write(bytes, done && ((err) => done(err === undefined)));
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.transport.uncork();
  };

  private maybeLow(): void {
    if (this.transport.writableLength < LOW_WATER) this.onLowWater();
  }
}

function simple(cookie: bigint, error: number): Uint8Array {
  const b = Buffer.allocUnsafe(Size.SIMPLE_REPLY);
  writeSimpleReply(b, 0, { error, cookie });
  return b;
}
