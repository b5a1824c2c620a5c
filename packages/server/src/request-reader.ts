// The transmission-phase reader of a connection. Socket bytes land in large
// arenas at increasing offsets and are pushed, as views, into @nbd/protocol's
// ClientStreamDecoder (which parses, limits and drains requests). Adjacent views
// of one arena merge in its queue, so a WRITE payload that spans several socket
// reads is already contiguous and reaches the device as a view, not a copy.
// On a net.Socket the kernel reads straight into the arena (Node's `onread`
// user-buffer mode: up to 1 MiB per read instead of a fresh 64 KiB buffer per
// read); any other Duplex has its 'data' chunks copied in. The consumer
// releases each payload when done with it; an arena whose payloads are all
// released is reused, so a steady WRITE stream allocates no new memory.
import type { Duplex } from 'node:stream';
import { type ClientFrame, ClientStreamDecoder } from '@nbd/protocol';

/** Usual arena size; a frame larger than this gets an arena of its own. */
export const ARENA_SIZE = 4 * 1024 * 1024;
/** Largest single socket read. */
const MAX_READ = 1024 * 1024;
/** A fresh arena is started when less room than this is left and no frame is mid-way. */
const MIN_READ = 64 * 1024;
/** Released arenas kept for reuse. */
const SPARE_ARENAS = 1;

export interface RequestReaderLimits {
  /** Extended headers negotiated: 32-byte requests, PAYLOAD_LEN payloads. */
  extended: boolean;
  /** Largest payload kept; longer ones are drained and the request is flagged `oversized`. */
  maxPayload: number;
  /** Longest payload drained before the stream is declared broken. */
  maxDrain: number;
}

/** Node's private user-buffer hooks of net.Socket (the ones `new Socket({ onread })` sets). */
interface UserBufferHooks {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

function userBufferHooks(socket: Duplex): UserBufferHooks | undefined {
  const handle = (socket as { _handle?: { useUserBuffer?: unknown } })._handle;
  if (typeof handle?.useUserBuffer !== 'function') return undefined;
  // Plain unix/TCP sockets only: a TLS socket's handle decrypts in between.
  const kind = (handle as object).constructor.name;
  if (kind !== 'Pipe' && kind !== 'TCP') return undefined;
  const find = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  if (buffer === undefined || callback === undefined || generator === undefined) return undefined;
  return { buffer, callback, generator };
}

export class RequestReader {
  /** 'direct': the socket reads into the arena; 'copy': 'data' chunks are copied in. */
  readonly mode: 'direct' | 'copy';
  /** Set once the stream ended or broke. */
  ended = false;
  error: Error | undefined;
  private arena: Uint8Array = new Uint8Array(ARENA_SIZE);
  /** Payloads of the current arena handed out and not yet released. */
  private arenaRefs = 0;
  /** Earlier arenas with payloads still unreleased → how many. */
  private readonly retired = new Map<ArrayBufferLike, { bytes: Uint8Array; refs: number }>();
  /** Arenas whose payloads were all released: reused instead of allocating (fresh memory costs page faults and GC). */
  private readonly spare: Uint8Array[] = [];
  /** Bytes of earlier arenas kept alive by unreleased payloads. */
  pinnedBytes = 0;
  /** Arenas allocated so far (monitoring, tests). */
  arenasAllocated = 1;
  /** End of the bytes received in the arena. */
  private tail = 0;
  /** Holds the views of `arena` received and not yet returned as frames. */
  private readonly decoder: ClientStreamDecoder;
  private sink: ((frame: ClientFrame) => void) | undefined;
  private onEnd: ((err: Error | undefined) => void) | undefined;
  private paused = true;
  private parsing = false;

  /**
   * Takes over reading `socket`. `leftover` are bytes already read past the
   * handshake; the socket's own buffered chunks are taken too.
   */
  constructor(
    private readonly socket: Duplex,
    limits: RequestReaderLimits,
    leftover?: Uint8Array,
  ) {
    this.decoder = new ClientStreamDecoder({ maxPayload: limits.maxPayload, maxDrain: limits.maxDrain });
    this.decoder.startTransmission(limits.extended);
    socket.pause();
    if (leftover !== undefined && leftover.length > 0) this.copyIn(leftover);
    for (let c = socket.read() as Uint8Array | null; c !== null; c = socket.read() as Uint8Array | null) this.copyIn(c);
    const hooks = userBufferHooks(socket);
    if (hooks !== undefined) {
      this.mode = 'direct';
      const s = socket as unknown as Record<symbol, unknown> & { _handle: { useUserBuffer(b: Uint8Array): void } };
      const first = this.nextBuffer();
      s[hooks.generator] = () => this.nextBuffer();
      s[hooks.callback] = (nread: number) => this.received(nread);
      s[hooks.buffer] = first;
      s._handle.useUserBuffer(first);
      // Pausing now stops the handle itself (Node's user-buffer mode): bytes wait in the kernel.
      socket.pause();
    } else {
      this.mode = 'copy';
      socket.on('data', (chunk: Uint8Array) => this.copyIn(chunk));
    }
    const end = () => this.finish(undefined);
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', (err) => this.finish(err));
    if (socket.readableEnded || socket.destroyed) this.finish(undefined);
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Every request, now and later, goes to `sink` while not paused. */
  startPush(sink: (frame: ClientFrame) => void, onEnd: (err: Error | undefined) => void): void {
    this.sink = sink;
    this.onEnd = onEnd;
    if (this.ended) {
      onEnd(this.error);
      return;
    }
    this.resume();
  }

  /** Stops delivering requests (backpressure); unread bytes wait in the kernel. */
  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    if (!this.paused || this.ended) return;
    this.paused = false;
    this.parse();
    if (!this.paused && !this.ended) this.socket.resume();
  }

  /**
   * The consumer is done with `payload` (a frame's payload): once every payload
   * of an arena is released, the arena is reused for later reads.
   */
  release(payload: Uint8Array): void {
    const ab = payload.buffer;
    if (ab === this.arena.buffer) {
      this.arenaRefs--;
      return;
    }
    const r = this.retired.get(ab);
    if (r === undefined || --r.refs > 0) return;
    this.retired.delete(ab);
    this.pinnedBytes -= r.bytes.length;
    this.recycle(r.bytes);
  }

  private recycle(bytes: Uint8Array): void {
    if (bytes.length === ARENA_SIZE && this.spare.length < SPARE_ARENAS) this.spare.push(bytes);
  }

  /** Where the next socket read lands: the arena's free tail, or a new arena when it cannot hold the frame under way. */
  private nextBuffer(): Uint8Array {
    const d = this.decoder;
    const have = d.buffered;
    // Bytes the frame under way still needs (0 when draining, or when whole frames wait unparsed).
    const want = d.wanted;
    const room = this.arena.length - this.tail;
    // Keep filling this arena while it has room for a decent read, or exactly finishes the frame under way.
    const keep = room >= MIN_READ ? room >= want : want > 0 && room >= want;
    if (!keep) {
      // Only the unparsed bytes move (one view: adjacent reads merge); views of earlier frames keep the old arena alive as long as needed.
      const rest = d.drain();
      const need = have + want;
      // A frame larger than an arena grows its own arena as its bytes arrive (never to what a header merely claims).
      const size = want > 0 && need > ARENA_SIZE ? Math.min(need, Math.max(ARENA_SIZE, 2 * have)) : Math.max(ARENA_SIZE, need + MIN_READ);
      const old = this.arena;
      let next: Uint8Array | undefined;
      if (this.arenaRefs === 0 && old.length === size) {
        // Nothing handed out from this arena is still in use: move the partial frame to its start.
        next = old;
        if (rest.buffer === old.buffer) old.copyWithin(0, rest.byteOffset, rest.byteOffset + have);
        else old.set(rest);
      } else {
        next = size === ARENA_SIZE ? this.spare.pop() : undefined;
        if (next === undefined) {
          next = new Uint8Array(size);
          this.arenasAllocated++;
        }
        next.set(rest);
        if (this.arenaRefs === 0) this.recycle(old);
        else {
          this.retired.set(old.buffer, { bytes: old, refs: this.arenaRefs });
          this.pinnedBytes += old.length;
        }
      }
      this.arena = next;
      this.arenaRefs = 0;
      this.tail = have;
      d.push(next.subarray(0, have));
    }
    return this.arena.subarray(this.tail, Math.min(this.arena.length, this.tail + MAX_READ));
  }

  /** A socket read put `n` bytes at the tail; false stops reading (backpressure). */
  private received(n: number): boolean {
    this.decoder.push(this.arena.subarray(this.tail, this.tail + n));
    this.tail += n;
    this.parse();
    return !this.paused;
  }

  private copyIn(chunk: Uint8Array): void {
    for (let off = 0; off < chunk.length; ) {
      const dst = this.nextBuffer();
      const n = Math.min(dst.length, chunk.length - off);
      dst.set(chunk.subarray(off, off + n));
      this.decoder.push(dst.subarray(0, n));
      this.tail += n;
      off += n;
      this.parse();
    }
  }

  private parse(): void {
    if (this.parsing || this.sink === undefined) return; // a sink call resumed us; the outer loop goes on
    this.parsing = true;
    try {
      while (!this.paused && !this.ended) {
        const frame = this.decoder.next();
        if (frame === undefined) break;
        // A payload is a view of the arena its last bytes landed in: the current one.
        if (frame.kind === 'request' && frame.payload?.buffer === this.arena.buffer) this.arenaRefs++;
        this.sink(frame);
      }
    } catch (e) {
      this.fail(e as Error);
    } finally {
      this.parsing = false;
    }
  }

  private fail(err: Error): void {
    this.error ??= err;
    this.finish(err);
    this.socket.destroy();
  }

  private finish(err: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    if (err !== undefined) this.error ??= err;
    this.onEnd?.(this.error);
  }
}
