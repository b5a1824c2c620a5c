// The handshake-phase reader of a connection's socket: feeds the stream decoder
// and hands out whole frames, pulled one at a time. Reading the socket pauses
// whenever nobody wants a frame, so a peer cannot make the decoder's buffer grow
// without bound. For transmission, `detach()` hands over to a RequestReader.
import type { Duplex } from 'node:stream';
import { type ClientDecoderLimits, type ClientFrame, ClientStreamDecoder } from '@nbd/protocol';

export class FrameSource {
  readonly decoder: ClientStreamDecoder;
  /** Set when the peer closed or the stream broke; then `next()` gives null. */
  ended = false;
  /** The decode error that ended the stream, if any. */
  error: Error | undefined;
  private waiter: PromiseWithResolvers<ClientFrame | null> | undefined;

  constructor(
    private readonly socket: Duplex,
    limits: ClientDecoderLimits,
  ) {
    this.decoder = new ClientStreamDecoder(limits);
    socket.on('data', this.onData);
    socket.on('end', this.onClose);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.pause();
  }

  private readonly onData = (chunk: Uint8Array) => {
    this.decoder.push(chunk);
    this.pump();
  };
  private readonly onClose = () => this.finish(undefined);
  private readonly onError = (err: Error) => this.finish(err);

  /** Stops reading the socket (another reader takes over) and returns the bytes received but not decoded. */
  detach(): Uint8Array {
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onClose);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    this.waiter = undefined;
    return this.decoder.drain();
  }

  /** The next frame (handshake phase), or null when the stream ended. Rejects on a bad stream. */
  next(): Promise<ClientFrame | null> {
    let frame: ClientFrame | undefined;
    try {
      frame = this.decoder.next();
    } catch (e) {
      this.fail(e as Error);
      return Promise.reject(e as Error);
    }
    if (frame !== undefined) return Promise.resolve(frame);
    if (this.ended) return Promise.resolve(null);
    this.waiter = Promise.withResolvers();
    this.socket.resume();
    return this.waiter.promise;
  }

  private pump(): void {
    const w = this.waiter;
    if (w === undefined) {
      this.socket.pause();
      return;
    }
    let frame: ClientFrame | undefined;
    try {
      frame = this.decoder.next();
    } catch (e) {
      this.waiter = undefined;
      this.fail(e as Error);
      w.reject(e as Error);
      return;
    }
    if (frame === undefined) return;
    this.waiter = undefined;
    this.socket.pause();
    w.resolve(frame);
  }

  private fail(err: Error): void {
    this.error = err;
    this.finish(err);
    this.socket.destroy();
  }

  private finish(err: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    if (err !== undefined) this.error ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve(null);
  }
}
