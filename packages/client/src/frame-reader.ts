// Where the server's bytes land: the transport reads into this connection's
// ReadArenas (one client ArenaPool per thread), the arenas feed the stream decoder,
// and whole frames go to one consumer at a time, synchronously, while their views
// are valid: the option engine during the handshake, the Connection afterwards.
import { trimWhenQuiet } from '@nbd/node';
import {
  type ArenaPolicy,
  ArenaPool,
  type ByteSink,
  ProtocolError,
  ReadArenas,
  type ServerFrame,
  ServerStreamDecoder,
  type Transport,
} from '@nbd/protocol';

/**
 * Read buffers of the client side: READ replies are large, so busy connections read
 * into 2 MiB arenas (several 256 KiB–1 MiB payloads, more than a unix socket holds),
 * 1 MiB per read at most; handshakes and quiet connections use 16 KiB of their own.
 */
export const CLIENT_ARENA_POLICY: ArenaPolicy = {
  smallSize: 16 * 1024,
  largeSize: 2 * 1024 * 1024,
  maxRead: 1024 * 1024,
  minRead: 64 * 1024,
  spares: 8,
};

let pool: ArenaPool | undefined;

/** The client's large read arenas, shared by every connection of this thread (allocated without zero-filling). */
export function clientArenaPool(): ArenaPool {
  pool ??= new ArenaPool(CLIENT_ARENA_POLICY, (size) => Buffer.allocUnsafeSlow(size));
  return pool;
}

/** Where a stopped reader's last reads land, to be ignored (never an arena from the pool). */
const DISCARD = new Uint8Array(64 * 1024);

/**
 * Bytes kept while no consumer waits (between negotiation calls, when the server owes
 * nothing): a stray reply is still reported by the next call; more is a server
 * streaming unasked, which ends the stream (unconsumed bytes are moved on every read).
 */
export const MAX_UNASKED_BYTES = 64 * 1024;

/** Takes each frame as it is decoded; returns false to stop after this one (the rest wait in the decoder). */
export type FrameConsumer = (frame: ServerFrame) => boolean;

/** A connection's read side: transport → ReadArenas → ServerStreamDecoder → one frame consumer at a time. */
export class FrameReader implements ByteSink {
  readonly decoder = new ServerStreamDecoder();
  readonly arenas: ReadArenas;
  /** Told once: the stream ended (cleanly, or with an error), or a frame was malformed. */
  onEnd: ((error: Error | undefined) => void) | undefined;
  private consumer: FrameConsumer | undefined;
  private untrim: (() => void) | undefined;
  private pumping = false;
  private stopped = false;

  constructor(readonly transport: Transport) {
    this.arenas = new ReadArenas(clientArenaPool(), this.decoder);
    this.arenas.allowLarge = false; // the handshake reads into small arenas only
    this.untrim = trimWhenQuiet(this.arenas, transport);
    transport.read(this);
    transport.resume();
  }

  /** Frames go to `consumer` from now on (frames already buffered first); undefined holds them. */
  consume(consumer: FrameConsumer | undefined): void {
    this.consumer = consumer;
    this.pump();
  }

  /**
   * The handshake is over: busy connections may read into large pooled arenas, and a
   * plain socket reads straight into them (no STARTTLS can follow now).
   */
  startTransmission(extended: boolean): void {
    this.decoder.startTransmission(extended);
    this.arenas.allowLarge = true;
    this.transport.readDirect?.();
  }

  /** How bytes arrive: 'direct' (the kernel reads into our arenas: the fast path) or 'copy'. */
  get readMode(): 'direct' | 'copy' {
    return (this.transport as { mode?: 'direct' | 'copy' }).mode === 'direct' ? 'direct' : 'copy';
  }

  buffer(): Uint8Array {
    // Node asks for the next buffer even after a read whose frames closed the connection.
    return this.stopped ? DISCARD : this.arenas.buffer();
  }

  filled(n: number): boolean {
    if (this.stopped) return false; // stop reading
    this.arenas.filled(n);
    this.pump();
    if (this.consumer === undefined && this.decoder.buffered > MAX_UNASKED_BYTES) {
      this.finish(
        new ProtocolError(`the server sent over ${MAX_UNASKED_BYTES} bytes while nothing was asked of it (it may only answer options)`),
      );
      return false;
    }
    return true;
  }

  ended(error?: Error): void {
    this.finish(error);
  }

  /** Stops for good: no more frames, arenas go back (views still held stay valid until released). */
  stop(): void {
    this.stopped = true;
    this.consumer = undefined;
    this.untrim?.();
    this.untrim = undefined;
    this.arenas.dispose();
  }

  private pump(): void {
    if (this.pumping || this.stopped) return; // a consumer's own call re-entering: the loop below goes on
    this.pumping = true;
    try {
      for (;;) {
        const consumer = this.consumer;
        if (consumer === undefined || this.stopped) return;
        const f = this.decoder.next();
        if (f === undefined || !consumer(f)) return;
      }
    } catch (e) {
      this.finish(e instanceof ProtocolError ? e : new ProtocolError(`bad reply stream: ${(e as Error).message}`, { cause: e }));
    } finally {
      this.pumping = false;
    }
  }

  private finish(error: Error | undefined): void {
    if (this.stopped) return;
    const onEnd = this.onEnd;
    this.stop();
    onEnd?.(error);
  }
}
