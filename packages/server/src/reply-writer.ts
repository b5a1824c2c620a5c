// Turns the engine's reply values into bytes on the transport: simple replies or
// chunks as negotiated, READ data from leased buffers (reused once written), and
// writes of one tick corked together (a burst of replies is one writev). Each write
// of leased or lent memory that finishes is reported, so the connection's budget can
// see queued reply bytes go down.
import { Command, encodeChunk, readReplyHeadSize, Size, type Transport, writeReadReplyHead, writeSimpleReply } from '@nbd/protocol';
import type { Reply, ReplyOut } from './replies.js';
import { type ReadLease, ReplyBuffers } from './reply-buffers.js';

/** READ reply buffers of this thread. */
const buffers = new ReplyBuffers(32 * 1024 * 1024);

export class ReplyWriter implements ReplyOut {
  private corked = false;
  private readonly head: number;

  constructor(
    private readonly transport: Transport,
    private readonly negotiated: { structured: boolean; extended: boolean },
    /** Leased or lent reply memory was written out (queued bytes went down). */
    private readonly onWritten: () => void,
  ) {
    this.head = readReplyHeadSize(negotiated.structured, negotiated.extended);
  }

  readLease(length: number): ReadLease {
    return buffers.lease(this.head, length);
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
      case 'data':
        writeReadReplyHead(r.lease.whole, 0, { cookie: r.cookie, offset: r.offset, length: r.lease.data.length, structured, extended });
        this.sendLease(r.lease);
        return;
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
          if (ok) this.onWritten();
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
          writeReadReplyHead(seg.lease.whole, 0, {
            cookie: r.cookie,
            offset: r.offset,
            dataOffset: BigInt(seg.offset),
            length: seg.lease.data.length,
            structured,
            extended,
            done,
          });
          this.sendLease(seg.lease);
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

  /** Sends a leased buffer (head already written) and ends the lease once the transport is done with it. */
  private sendLease(lease: ReadLease): void {
    if (!lease.pooled) {
      this.write(lease.whole);
      lease.abandon(); // Node's slab memory: nothing to give back
      return;
    }
    this.write(lease.whole, (ok) => {
      // A failed write may leave the buffer referenced by the dying transport: not reused.
      if (!ok) {
        lease.abandon();
        return;
      }
      lease.release();
      this.onWritten();
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
}

function simple(cookie: bigint, error: number): Uint8Array {
  const b = Buffer.allocUnsafe(Size.SIMPLE_REPLY);
  writeSimpleReply(b, 0, { error, cookie });
  return b;
}
