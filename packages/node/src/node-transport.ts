// A Transport over a Node stream: a net.Socket (TCP, unix socket, socketpair end),
// a tls.TLSSocket, or any Duplex. Plain sockets read straight into the sink's
// buffers (fast-read.ts); everything else has its 'data' chunks copied in.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ByteSink, PeerInfo, Transport } from '@nbd/protocol';
import { type DirectReads, directReads, stopReading } from './fast-read.js';

export interface NodeTransportOptions {
  /** Disable Nagle's algorithm (TCP). Default true: requests and replies are latency-bound. */
  noDelay?: boolean;
  /** Send TCP keepalive probes after this many idle milliseconds (0: off, the default). */
  keepAlive?: number;
}

/** Who is at the other end of a Node stream. */
export function peerOf(socket: Duplex): PeerInfo {
  const s = socket as Partial<Socket>;
  if (s.remoteAddress !== undefined) {
    return { address: `${s.remoteAddress}:${s.remotePort}`, remoteAddress: s.remoteAddress, remotePort: s.remotePort };
  }
  return { address: 'socket' };
}

export class NodeTransport implements Transport {
  readonly peer: PeerInfo;
  onDrain: (() => void) | undefined;
  onClose: ((error?: Error) => void) | undefined;
  /** How bytes reach the sink: 'direct' (the kernel reads into its buffers) or 'copy'. Unset until `read()`. */
  mode: 'direct' | 'copy' | undefined;
  private sink: ByteSink | undefined;
  private direct: DirectReads | undefined;
  private error: Error | undefined;
  /** The stream ended (cleanly, or with `error`), told to the sink once there is one. */
  private ending: { error: Error | undefined } | undefined;
  private endTold = false;
  private isClosed = false;

  constructor(
    readonly socket: Duplex,
    opts: NodeTransportOptions = {},
  ) {
    this.peer = peerOf(socket);
    const s = socket as Partial<Socket>;
    if (opts.noDelay !== false) s.setNoDelay?.(true);
    if (opts.keepAlive) s.setKeepAlive?.(true, opts.keepAlive);
    socket.pause();
    socket.on('error', (err: Error) => {
      this.error ??= err;
      this.end_(err);
    });
    socket.on('end', () => this.end_(undefined));
    socket.on('drain', () => this.onDrain?.());
    socket.on('close', () => {
      this.isClosed = true;
      this.end_(this.error);
      this.onClose?.(this.error);
    });
    if (socket.destroyed) this.isClosed = true;
  }

  get closed(): boolean {
    return this.isClosed || this.socket.destroyed;
  }

  get writableLength(): number {
    return this.socket.writableLength;
  }

  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  read(sink: ByteSink): void {
    const first = this.sink === undefined;
    this.sink = sink;
    if (!first) {
      this.direct?.rebuffer();
      return;
    }
    // Chunks the stream buffered before we took over come first.
    for (let c = this.socket.read() as Uint8Array | null; c !== null; c = this.socket.read() as Uint8Array | null) this.copyIn(c);
    this.direct = directReads(
      this.socket,
      () => this.sink!.buffer(),
      (n) => this.sink!.filled(n),
    );
    this.mode = this.direct ? 'direct' : 'copy';
    if (!this.direct) this.socket.on('data', (chunk: Uint8Array) => this.copyIn(chunk));
    this.socket.pause();
    if (this.socket.readableEnded) this.end_(this.error);
    this.tellEnd();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    if (this.ending === undefined) this.socket.resume();
  }

  rebuffer(): void {
    this.direct?.rebuffer();
  }

  write(bytes: Uint8Array, done?: (error?: Error) => void): void {
    const s = this.socket;
    if (s.destroyed || !s.writable) {
      done?.(this.error ?? new Error('write on a closed transport'));
      return;
    }
    if (done === undefined) s.write(bytes);
    else s.write(bytes, (err) => done(err ?? undefined));
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  end(): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.end();
  }

  destroy(error?: Error): void {
    this.socket.destroy(error);
  }

  /**
   * Stops reading for good and hands the stream over (to the kernel, as a
   * descriptor): nothing buffered may be left behind. Throws if the socket
   * cannot stop reading.
   */
  detach(): Duplex {
    stopReading(this.socket);
    this.socket.removeAllListeners('data');
    this.sink = undefined;
    return this.socket;
  }

  private copyIn(chunk: Uint8Array): void {
    const sink = this.sink;
    if (sink === undefined) return;
    let more = true;
    for (let off = 0; off < chunk.length; ) {
      const dst = sink.buffer();
      const n = Math.min(dst.length, chunk.length - off);
      dst.set(chunk.subarray(off, off + n));
      off += n;
      if (!sink.filled(n)) more = false;
    }
    if (!more) this.socket.pause();
  }

  private end_(error: Error | undefined): void {
    this.ending ??= { error };
    this.tellEnd();
  }

  private tellEnd(): void {
    if (this.ending === undefined || this.endTold || this.sink === undefined) return;
    this.endTold = true;
    this.sink.ended(this.ending.error);
  }
}
