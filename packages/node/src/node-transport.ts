// A Transport over a Node stream: a net.Socket (TCP, unix socket, socketpair end),
// a tls.TLSSocket, or any Duplex. Bytes are copied from 'data' chunks into the
// sink's buffers; once the handshake is over (no STARTTLS can follow), `readDirect()`
// lets a plain socket read straight into them instead (fast-read.ts).
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { ByteSink, PeerInfo, Transport } from '@nbd/protocol';
import { type DirectReads, directReads, stopReading } from './fast-read.js';
import type { TlsIdentity } from './tls.js';

/** Socket settings a {@link NodeTransport} applies when it takes a stream. */
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

/**
 * The {@link Transport} over a Node stream (TCP, unix socket, socketpair end, TLS socket, or any Duplex):
 * what client and server connections read and write through. The stream stays paused until `read()` and `resume()`.
 */
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

  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter listeners take any arguments
  private readonly listeners: { [event: string]: (...args: any[]) => void } = {
    error: (err: Error) => {
      this.error ??= err;
      this.end_(err);
    },
    end: () => this.end_(undefined),
    drain: () => this.onDrain?.(),
    close: () => {
      this.isClosed = true;
      this.end_(this.error);
      this.onClose?.(this.error);
    },
    data: (chunk: Uint8Array) => this.copyIn(chunk),
  };

  constructor(
    /** The stream it reads and writes; use it only to inspect (reading from it directly would steal bytes). */
    readonly socket: Duplex,
    opts: NodeTransportOptions = {},
  ) {
    this.peer = peerOf(socket);
    const s = socket as Partial<Socket>;
    if (opts.noDelay !== false) s.setNoDelay?.(true);
    if (opts.keepAlive) s.setKeepAlive?.(true, opts.keepAlive);
    socket.pause();
    for (const event of ['error', 'end', 'drain', 'close']) socket.on(event, this.listeners[event]!);
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
    this.takeBuffered();
    this.mode = 'copy';
    this.socket.on('data', this.listeners.data!);
    this.socket.pause();
    if (this.socket.readableEnded) this.end_(this.error);
    this.tellEnd();
  }

  /**
   * From now on, a plain TCP or unix socket reads straight into the sink's buffers
   * (no copy, up to 1 MiB per read). Call it once no STARTTLS can follow. Other
   * streams go on copying. Returns whether reads are direct now.
   */
  readDirect(): boolean {
    if (this.mode !== 'copy' || this.sink === undefined) return this.mode === 'direct';
    const paused = this.socket.isPaused();
    this.socket.pause();
    this.socket.off('data', this.listeners.data!);
    this.takeBuffered();
    this.direct = directReads(
      this.socket,
      () => this.sink!.buffer(),
      (n) => this.sink!.filled(n),
    );
    if (this.direct) this.mode = 'direct';
    else this.socket.on('data', this.listeners.data!);
    if (!paused) this.resume();
    return this.direct !== undefined;
  }

  /** Chunks the stream buffered before we read it go to the sink first. */
  private takeBuffered(): void {
    for (let c = this.socket.read() as Uint8Array | null; c !== null; c = this.socket.read() as Uint8Array | null) this.copyIn(c);
  }

  /**
   * STARTTLS: stops using the plain socket (nothing more is read from it here; bytes
   * received but not consumed are dropped, never interpreted), and continues over the
   * TLS socket `upgrade` makes of it.
   */
  async startTls(
    upgrade: (socket: Socket) => Promise<{ socket: TLSSocket; identity: TlsIdentity }>,
  ): Promise<{ transport: NodeTransport; identity: TlsIdentity }> {
    const raw = this.release();
    const { socket, identity } = await upgrade(raw as Socket);
    return { transport: new NodeTransport(socket), identity };
  }

  /** Removes every listener of ours from the socket: another owner takes it over. */
  private release(): Duplex {
    this.socket.pause();
    for (const [event, fn] of Object.entries(this.listeners)) this.socket.off(event, fn);
    this.sink = undefined;
    return this.socket;
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
    return this.release();
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
