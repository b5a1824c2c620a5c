// Read buffers for a byte stream, without I/O: the transport asks `buffer()` where
// its next read lands and reports `filled(n)`; the bytes go, as views, into a
// stream decoder. Reads land one after another in an arena, so a frame that spans
// several reads is still one contiguous view. A region is written once while views
// into it may live: views handed out stay valid, and an arena goes back for reuse
// only once every view held from it was released. When an arena runs out, only the
// bytes of the frame in progress move to the next one.
//
// Memory follows traffic: a quiet or handshaking connection reads into a small
// arena of its own; traffic moves it to a large arena taken from a pool shared by
// every connection, and `trim()` gives that back once the connection is quiet.
// The pool keeps a few spare large arenas and drops the rest, so memory returns
// after load. A frame larger than an arena grows its own arena as bytes arrive,
// never to what a header merely claims.

/** What an arena feeds: the stream decoders of frames.ts fit this shape. */
export interface ArenaDecoder {
  /** Takes a view of newly read bytes; the decoder may hold it until the frame is returned. */
  push(view: Uint8Array): void;
  /** Everything buffered, consumed; pushing it back resumes the frame in progress. */
  drain(): Uint8Array;
  /** Bytes received and not yet returned as frames. */
  readonly buffered: number;
  /** Bytes the frame in progress still needs, when known (0 otherwise). */
  readonly wanted: number;
}

/** Sizing policy: different for a server (big WRITE payloads) and a client (big READ replies). */
export interface ArenaPolicy {
  /** Arena of a quiet or handshaking connection, not pooled. */
  smallSize: number;
  /** Arena of a busy connection, taken from the pool. */
  largeSize: number;
  /** Largest single read. */
  maxRead: number;
  /** Less room than this (between frames) starts a new large arena. */
  minRead: number;
  /** Spare large arenas the pool keeps for reuse; more are dropped. */
  spares: number;
  /**
   * Bytes of large arenas out at once across all connections (default 64 large arenas).
   * Beyond it, a busy connection gets a `pressureSize` arena instead: memory stays bounded
   * under many busy connections, at the cost of more, smaller reads.
   */
  budget?: number;
  /** Arena of a busy connection when the budget is spent (default 256 KiB). */
  pressureSize?: number;
}

/** Large arenas shared by the connections of one thread. */
export class ArenaPool {
  /** Arenas allocated so far (monitoring, tests). */
  allocated = 0;
  /** Arenas handed out and not given back. */
  leased = 0;
  /** Their bytes. */
  leasedBytes = 0;
  private readonly spare: Uint8Array[] = [];
  private readonly budget: number;
  private takenSinceDecay = false;

  constructor(
    /** Arena sizes and limits, shared by every connection that uses this pool. */
    readonly policy: ArenaPolicy,
    /** Allocates an arena; a Node caller may skip zero-filling. */
    private readonly alloc: (size: number) => Uint8Array = (size) => new Uint8Array(size),
  ) {
    this.budget = policy.budget ?? 64 * policy.largeSize;
  }

  /** The size of the next arena of a busy connection: large while the budget allows, else smaller. */
  get busySize(): number {
    const { largeSize, pressureSize = 256 * 1024 } = this.policy;
    return this.leasedBytes + largeSize <= this.budget ? largeSize : Math.min(largeSize, pressureSize);
  }

  /** An arena of `size` bytes: a spare when `size` is the standard large size. */
  take(size: number): Uint8Array {
    this.leased++;
    this.leasedBytes += size;
    this.takenSinceDecay = true;
    if (size === this.policy.largeSize) {
      const s = this.spare.pop();
      if (s !== undefined) return s;
    }
    this.allocated++;
    return this.alloc(size);
  }

  /** An arena nothing reads from any more: kept as a spare, or dropped. */
  give(bytes: Uint8Array): void {
    this.forget(bytes);
    if (bytes.length === this.policy.largeSize && this.spare.length < this.policy.spares) this.spare.push(bytes);
  }

  /** An arena that leaves the pool for good (a caller kept a view of it). */
  forget(bytes: Uint8Array): void {
    this.leased--;
    this.leasedBytes -= bytes.length;
  }

  /** Spare arenas held. */
  get spares(): number {
    return this.spare.length;
  }

  /** Called periodically: a pool nobody took from since the last call drops a spare, so memory returns after load. */
  decay(): void {
    if (!this.takenSinceDecay) this.spare.pop();
    this.takenSinceDecay = false;
  }

  /** Drops every spare (tests; a process under memory pressure). */
  clear(): void {
    this.spare.length = 0;
  }
}

/** A view its arena keeps for the owner of the lease, until `release()`; releasing again does nothing. */
export interface ViewLease {
  readonly bytes: Uint8Array;
  release(): void;
}

class ArenaLease implements ViewLease {
  private from: ReadArenas | undefined;

  constructor(
    from: ReadArenas,
    readonly bytes: Uint8Array,
  ) {
    this.from = from;
  }

  release(): void {
    const from = this.from;
    if (from === undefined) return;
    this.from = undefined;
    from.release(this.bytes);
  }
}

interface Arena {
  bytes: Uint8Array;
  /** Views held by a consumer and not yet released. */
  refs: number;
  /** A view was handed out for good: never reused, never pooled. */
  kept: boolean;
  /** Taken from the pool (a large arena, or a frame's own). */
  pooled: boolean;
}

/** The read buffers of one connection. */
export class ReadArenas {
  /** Bytes of earlier arenas kept alive by views not yet released. */
  pinnedBytes = 0;
  private arena: Arena;
  /** End of the bytes received in the current arena. */
  private tail = 0;
  /** Earlier arenas that views still hold, by their ArrayBuffer. */
  private readonly retired = new Map<ArrayBufferLike, Arena>();
  /** The largest frame seen (up to half a large arena): less room than this starts a new arena between frames. */
  private typical = 0;
  private disposed = false;
  /** False during a handshake: arenas stay small, grown only to the frame in progress. */
  allowLarge = true;
  /** Set by every read; a periodic sweep clears it and trims connections that stayed quiet. */
  active = false;

  constructor(
    /** Where large arenas come from (shared by the connections of a thread); its policy sizes the reads. */
    readonly pool: ArenaPool,
    private readonly decoder: ArenaDecoder,
  ) {
    this.arena = this.small();
  }

  /** Whether the connection reads into a large (pooled) arena now. */
  get large(): boolean {
    return this.arena.pooled;
  }

  /** Where the next read lands: free room in the current arena, or a new arena. Never empty. */
  buffer(): Uint8Array {
    const { maxRead, minRead } = this.pool.policy;
    const have = this.decoder.buffered;
    const want = this.decoder.wanted;
    const a = this.arena;
    if (have > 0 && want > 0) this.typical = Math.min(a.bytes.length / 2, Math.max(this.typical, have + want));
    const room = a.bytes.length - this.tail;
    if (a.pooled) {
      if (room < want) {
        // The frame under way does not fit. One that fits a standard arena moves on now (little
        // to copy yet); a larger one fills this arena first, then grows into one twice its bytes.
        if (have + want + minRead <= this.pool.busySize || room === 0) this.rotate(have, want);
      } else if (room < Math.max(minRead, this.typical)) {
        // Near the end: finish the frame under way exactly here, or start a new arena between frames.
        if (have > 0 && want > 0) return a.bytes.subarray(this.tail, this.tail + want);
        if (have === 0) this.rotate(0, want);
      }
    } else if (room < Math.max(want, a.bytes.length / 4)) {
      this.rotate(have, want);
    }
    return this.arena.bytes.subarray(this.tail, Math.min(this.arena.bytes.length, this.tail + maxRead));
  }

  /** `n` bytes landed at the start of the region the last `buffer()` returned. */
  filled(n: number): void {
    this.decoder.push(this.arena.bytes.subarray(this.tail, this.tail + n));
    this.tail += n;
    this.active = true;
  }

  /** A consumer holds `view` (a frame's payload) until `release(view)`; its arena is not reused meanwhile. */
  hold(view: Uint8Array): void {
    const a = this.arenaOf(view);
    if (a !== undefined) a.refs++;
  }

  /** Holds `view` as `hold` does, for one owner that ends it with `release()` on the lease. */
  lease(view: Uint8Array): ViewLease {
    this.hold(view);
    return new ArenaLease(this, view);
  }

  /** The consumer is done with a view it held. */
  release(view: Uint8Array): void {
    const a = this.arenaOf(view);
    if (a === undefined || --a.refs > 0 || a === this.arena) return;
    this.retired.delete(a.bytes.buffer);
    this.pinnedBytes -= a.bytes.length;
    this.drop(a);
  }

  /** `view` is handed out for good (the caller keeps it): its arena is never reused. */
  keep(view: Uint8Array): void {
    const a = this.arenaOf(view);
    if (a !== undefined) a.kept = true;
  }

  /**
   * A quiet connection (nothing buffered, nothing held) gives its large arena back
   * and reads into a small one again. True when `buffer()` changed: a transport
   * with a pending read buffer must take the new one before anything else runs.
   */
  trim(): boolean {
    const a = this.arena;
    if (!a.pooled || a.refs > 0 || this.decoder.buffered > 0) return false;
    this.arena = this.small();
    this.tail = 0;
    this.typical = 0;
    this.drop(a);
    return true;
  }

  /** The connection is gone: the current arena goes back now, held ones when released. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const a = this.arena;
    if (a.refs > 0) {
      this.retired.set(a.bytes.buffer, a);
      this.pinnedBytes += a.bytes.length;
    } else this.drop(a);
    this.arena = { bytes: new Uint8Array(0), refs: 0, kept: true, pooled: false };
    this.tail = 0;
  }

  private arenaOf(view: Uint8Array): Arena | undefined {
    return view.buffer === this.arena.bytes.buffer ? this.arena : this.retired.get(view.buffer);
  }

  private small(): Arena {
    return { bytes: new Uint8Array(this.pool.policy.smallSize), refs: 0, kept: false, pooled: false };
  }

  /** Moves to a fresh arena, taking along only the bytes of the frame in progress. */
  private rotate(have: number, want: number): void {
    const { smallSize, largeSize, minRead } = this.pool.policy;
    const old = this.arena;
    const rest = this.decoder.drain(); // one view: adjacent reads merge
    const need = have + want;
    let size: number;
    let pooled = true;
    if (!old.pooled && !this.allowLarge) {
      // Handshake: small arenas, grown to the frame in progress (the decoder's limits bound it).
      size = Math.max(smallSize, need + smallSize / 4);
      pooled = false;
    } else if (need + minRead <= this.pool.busySize) {
      size = this.pool.busySize;
    } else {
      // A frame larger than a standard arena grows into one twice what arrived (never to what is claimed).
      size = want > 0 ? Math.min(need, Math.max(largeSize, 2 * have)) : Math.max(largeSize, have + minRead);
    }
    if (old.refs === 0 && !old.kept && old.pooled === pooled && old.bytes.length === size) {
      // Nothing handed out from this arena is in use: the partial frame moves to its start.
      if (rest.buffer === old.bytes.buffer) {
        const from = rest.byteOffset - old.bytes.byteOffset;
        old.bytes.copyWithin(0, from, from + have);
      } else old.bytes.set(rest);
      this.tail = have;
      this.decoder.push(old.bytes.subarray(0, have));
      return;
    }
    const next: Arena = { bytes: pooled ? this.pool.take(size) : new Uint8Array(size), refs: 0, kept: false, pooled };
    next.bytes.set(rest);
    if (old.refs > 0) {
      this.retired.set(old.bytes.buffer, old);
      this.pinnedBytes += old.bytes.length;
    } else this.drop(old);
    this.arena = next;
    this.tail = have;
    this.decoder.push(next.bytes.subarray(0, have));
  }

  /** An arena nobody reads from: pooled ones go back to the pool (kept ones only leave the count). */
  private drop(a: Arena): void {
    if (!a.pooled) return;
    if (a.kept) this.pool.forget(a.bytes);
    else this.pool.give(a.bytes);
  }
}
