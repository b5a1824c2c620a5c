// The seam between the protocol engines and a byte stream. Handshake and
// transmission code see only this: bytes in (into buffers the reader chooses),
// bytes out, pause and resume, close. @nbd/node implements it over TCP, unix
// sockets, socketpairs and TLS; a browser WebSocket transport can implement it too.

/** Where a transport puts what it reads (a connection's ReadArenas and decoder). */
export interface ByteSink {
  /** Free room for the next read; never empty. The transport may read into it directly. */
  buffer(): Uint8Array;
  /** `n` bytes landed at the start of the last `buffer()`. False asks the transport to stop reading. */
  filled(n: number): boolean;
  /** The stream ended: cleanly without `error`, or broken. Called once. */
  ended(error?: Error): void;
}

/** Who is at the other end. */
export interface PeerInfo {
  /** For logs: "host:port", a unix socket path, or "socket" when unknown. */
  address: string;
  /** The peer's IP address, for a TCP connection. */
  remoteAddress?: string;
  /** The peer's TCP port, for a TCP connection. */
  remotePort?: number;
}

/** A connected byte stream. */
export interface Transport {
  /** Who is at the other end (for logs and access decisions). */
  readonly peer: PeerInfo;
  /**
   * Starts delivering received bytes to `sink` (a later call replaces the sink).
   * Reading stays paused until `resume()`.
   */
  read(sink: ByteSink): void;
  /** Stops reading: unread bytes wait in the kernel. */
  pause(): void;
  /** Starts (or restarts, after `pause()`) delivering received bytes to the sink. */
  resume(): void;
  /** The sink's `buffer()` changed outside a read (an arena was trimmed): take the new one now. */
  rebuffer(): void;
  /**
   * Where the transport can, read straight into the sink's buffers from now on instead of
   * copying (called once no STARTTLS can follow). Returns whether it does.
   */
  readDirect?(): boolean;
  /** Queues `bytes`; `done` runs once they are written, with an error if they never will be. */
  write(bytes: Uint8Array, done?: (error?: Error) => void): void;
  /** Writes until `uncork()` leave together. */
  cork(): void;
  /** Sends the writes queued since `cork()` together. */
  uncork(): void;
  /** Bytes queued and not yet written. */
  readonly writableLength: number;
  /** Set once `onDrain` is due: writes queued past the high-water mark. */
  readonly needsDrain: boolean;
  /** Called when the queue has emptied after `needsDrain` was set. */
  onDrain: (() => void) | undefined;
  /** Called once, when the transport has closed (with the error that broke it, if any). */
  onClose: ((error?: Error) => void) | undefined;
  /** Ends our side once queued writes are out. */
  end(): void;
  /** Closes at once, dropping queued writes. */
  destroy(error?: Error): void;
  /** True once the transport has closed (ended, destroyed or broken): writes go nowhere. */
  readonly closed: boolean;
}
