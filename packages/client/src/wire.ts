// The socket plus the incremental decoder, shared by both phases: the handshake
// pulls frames one at a time with `next()`; the transmission phase takes the
// intake over (bytes already buffered included) with `release()`.
import type { Duplex } from 'node:stream';
import { ProtocolError, type ServerFrame, type ServerStreamDecoder } from '@nbd/protocol';
import type { Intake } from './intake.js';

export class Wire {
  readonly decoder: ServerStreamDecoder;
  private waiter: { resolve: (f: ServerFrame) => void; reject: (e: unknown) => void } | undefined;
  private failure: Error | undefined;
  private released = false;

  constructor(
    readonly socket: Duplex,
    private readonly intake: Intake,
  ) {
    this.decoder = intake.decoder;
    intake.onBytes = this.onBytes;
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  /** The next whole frame from the server. Rejects if the stream ends, breaks, or `signal` aborts. */
  next(signal?: AbortSignal): Promise<ServerFrame> {
    if (this.waiter) return Promise.reject(new Error('internal: concurrent reads during the handshake'));
    try {
      const f = this.decoder.next();
      if (f) return Promise.resolve(f);
    } catch (e) {
      this.fail(e as Error);
    }
    if (this.failure) return Promise.reject(this.failure);
    signal?.throwIfAborted();
    return new Promise<ServerFrame>((resolve, reject) => {
      const onAbort = () => {
        this.waiter = undefined;
        // An option reply may still be on its way: the stream can no longer be trusted.
        this.fail(new Error('handshake aborted', { cause: signal?.reason }));
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiter = {
        resolve: (f) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(f);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
    });
  }

  write(bytes: Uint8Array): void {
    if (this.failure) throw this.failure;
    this.socket.write(bytes);
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Stops listening and hands the socket and decoder to the transmission phase. */
  release(): { socket: Duplex; intake: Intake } {
    this.released = true;
    this.intake.onBytes = () => {};
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return { socket: this.socket, intake: this.intake };
  }

  /** Closes the socket for good (handshake failure, abort). */
  destroy(err?: Error): void {
    if (err) this.fail(err);
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.socket.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  private readonly onBytes = (): void => {
    if (this.released) return;
    const w = this.waiter;
    if (!w) return;
    let f: ServerFrame | undefined;
    try {
      f = this.decoder.next();
    } catch (e) {
      this.fail(e instanceof ProtocolError ? e : new ProtocolError(String(e)));
      return;
    }
    if (f) {
      this.waiter = undefined;
      w.resolve(f);
    }
  };

  private readonly onError = (err: Error): void => this.fail(err);

  private readonly onClose = (): void => this.fail(new Error('the server closed the connection during the handshake'));
}
