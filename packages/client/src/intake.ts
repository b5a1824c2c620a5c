// Where the server's bytes come in. For sockets we open ourselves, reads land in
// large arenas (net.Socket's `onread`): one read syscall takes whatever the kernel
// has (not 64 KiB pieces), and a READ payload spanning several reads is still one
// contiguous view, handed out without a copy. A region of an arena is written only
// once while views into it may live, so views handed out stay valid; a full arena is
// replaced and only the bytes of the frame in progress move to the next one.
// Views lent out (copy's reads) come back with a release call: an arena whose views
// all came back is reused. For a Duplex the caller gives us, its 'data' chunks are
// used as they come.
import type { Duplex } from 'node:stream';
import { ServerStreamDecoder } from '@nbd/protocol';

/** Arena size: several 256 KiB payloads plus headers, and more than a unix socket buffers. */
const ARENA = 2 * 1024 * 1024;
/** Smallest read we offer; below this the arena is replaced first. */
const MIN_READ = 64 * 1024;

/** One read arena and who still looks at it. */
interface Arena {
  buf: Buffer;
  /** Views lent out and not yet given back. */
  lent: number;
  /** A view was handed out for good: never reuse this arena. */
  kept: boolean;
}

/** Spare arenas kept for reuse per connection (reused memory is hot: no page faults, no GC). */
const SPARES = 4;

export class Intake {
  readonly decoder = new ServerStreamDecoder();
  /** Called after bytes were pushed into the decoder (the handshake's reader, then the Connection's). */
  onBytes: () => void = () => {};
  /** While true (the handshake), every arena counts as kept: decoded frames may hold views into it. */
  keepAll = true;
  private arena: Arena | undefined;
  private pos = 0;
  /** The largest frame seen (up to half an arena): less free space than this starts a new arena between frames. */
  private typical = 0;
  private readonly arenas = new WeakMap<ArrayBufferLike, Arena>();
  private readonly spares: Buffer[] = [];
  private socket: Duplex | undefined;

  /** The `onread` option for `net.connect`: reads go into arenas. */
  readonly onread = {
    buffer: (): Uint8Array => this.space(),
    callback: (n: number): boolean => {
      const view = this.arena!.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.decoder.push(view);
      this.onBytes();
      return true; // false would pause the socket
    },
  };

  /** For a socket opened without `onread` (the caller's Duplex): its 'data' events feed the decoder. */
  listen(socket: Duplex): void {
    this.socket = socket;
    socket.on('data', this.onData);
  }

  /** Stops feeding (detach): later bytes are no longer decoded. */
  stop(): void {
    this.onBytes = () => {};
    this.socket?.off('data', this.onData);
  }

  /** `view` (from a decoded frame) is handed to a caller for good: its arena is never reused. */
  keep(view: Uint8Array): void {
    const a = this.arenas.get(view.buffer);
    if (a) a.kept = true;
  }

  /** `view` is lent to a caller until the returned function is called; then its arena may be reused. */
  lend(view: Uint8Array): () => void {
    const a = this.arenas.get(view.buffer);
    if (!a) return () => {};
    a.lent++;
    let back = false;
    return () => {
      if (back) return;
      back = true;
      if (--a.lent === 0) this.retire(a);
    };
  }

  private readonly onData = (chunk: Uint8Array): void => {
    this.decoder.push(chunk);
    this.onBytes();
  };

  /** An arena nobody reads from any more goes back to the spares. */
  private retire(a: Arena): void {
    if (a === this.arena || a.kept || a.lent > 0 || this.spares.length >= SPARES || a.buf.length !== ARENA) return;
    this.arenas.delete(a.buf.buffer);
    this.spares.push(a.buf);
  }

  /**
   * Free space for the next read, room for at least the rest of the frame in progress.
   * Near the end of an arena, the read is cut at the end of the frame in progress and the
   * next arena starts between frames, so the bytes of a part-read frame rarely need moving.
   */
  private space(): Uint8Array {
    const wanted = this.decoder.wanted;
    const buffered = this.decoder.buffered;
    if (buffered > 0 && wanted > 0) this.typical = Math.min(ARENA / 2, Math.max(this.typical, buffered + wanted));
    const a = this.arena;
    const free = a === undefined ? 0 : a.buf.length - this.pos;
    const tight = free < Math.max(MIN_READ, this.typical);
    if (a !== undefined && tight && buffered > 0 && wanted > 0 && wanted <= free) {
      return a.buf.subarray(this.pos, this.pos + wanted); // finish this frame here
    }
    // Room asked for a frame is capped: a peer's claimed length alone never sizes an allocation.
    const need = Math.max(MIN_READ, Math.min(wanted, ARENA / 2));
    if (a === undefined || free < need || (tight && buffered === 0)) this.rotate(need);
    return this.arena!.buf.subarray(this.pos);
  }

  /**
   * Moves to a fresh (or spare) arena, taking along the bytes of an unfinished frame. A frame
   * larger than an arena grows into arenas twice the bytes already received, so what is
   * allocated follows what arrived (at most twice), and moving costs at most one more copy.
   */
  private rotate(need: number): void {
    const old = this.arena;
    const rest = this.decoder.drain(); // one view: adjacent reads merge
    const size = Math.max(ARENA, rest.length + need, 2 * rest.length);
    const buf = size === ARENA && this.spares.length > 0 ? this.spares.pop()! : Buffer.allocUnsafeSlow(size);
    buf.set(rest);
    const a: Arena = { buf, lent: 0, kept: this.keepAll };
    this.arenas.set(buf.buffer, a);
    this.arena = a;
    this.pos = rest.length;
    this.decoder.push(buf.subarray(0, rest.length));
    if (old) this.retire(old);
  }
}
