// Whether a connection may read more requests: one object over everything a client
// can make us hold. Requests in flight and their bytes (READ lengths, WRITE payloads),
// read arenas pinned by payloads a device still holds, and reply bytes queued for a
// client that does not read its replies. When any of them goes down, one callback
// runs and the frame pump asks `canRead()` again.

/**
 * Reply bytes queued before reading pauses, and the level below which written replies
 * call back. Small on purpose: replies waiting in our memory only add cache misses;
 * requests waiting in the kernel's socket buffer cost nothing.
 */
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

/** What one connection may hold before reading pauses. */
export interface BudgetLimits {
  /** Requests in flight. */
  maxInFlight: number;
  /** Request and reply bytes in flight; also bounds pinned arena bytes and (at most 4 MiB) queued reply bytes. */
  maxInFlightBytes: number;
}

export class Budget {
  /** Requests dispatched and not yet answered. */
  requests = 0;
  /** READ lengths and WRITE payloads of those requests. */
  bytes = 0;
  private readonly highWater: number;

  constructor(
    private readonly limits: BudgetLimits,
    /** The connection's read arenas: bytes of arenas that held payloads keep alive. */
    private readonly arenas: { readonly pinnedBytes: number },
    /** The transport: reply bytes queued and not yet taken by the kernel. */
    private readonly queue: { readonly writableLength: number },
    /** Something the budget counts went down: reading may resume. */
    private readonly onChange: () => void,
  ) {
    this.highWater = Math.min(limits.maxInFlightBytes, HIGH_WATER);
  }

  canRead(): boolean {
    const { maxInFlight, maxInFlightBytes } = this.limits;
    return (
      this.requests < maxInFlight &&
      this.bytes < maxInFlightBytes &&
      this.arenas.pinnedBytes < maxInFlightBytes &&
      this.queue.writableLength < this.highWater
    );
  }

  /** A request went to the device, holding `bytes`. */
  start(bytes: number): void {
    this.requests++;
    this.bytes += bytes;
  }

  /** A request was answered (its payload, if any, released first). */
  finish(bytes: number): void {
    this.requests--;
    this.bytes -= bytes;
    this.onChange();
  }

  /** A reply was written out: calls back once the queue is below the low watermark. */
  written(): void {
    if (this.queue.writableLength < LOW_WATER) this.onChange();
  }
}
