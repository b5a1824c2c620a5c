// Helpers for the server interop tests: our server in-process on a unix socket
// in a temp dir, and a raw-socket client speaking through the protocol codecs.
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { type ServerFrame, ServerStreamDecoder } from '@nbd/protocol';
import { type Export, listenAndServe, MemoryDevice, type ServeOptions } from '@nbd/server';
import { tempDir, unixUri } from '../support/peers.js';

export interface OurServer {
  socket: string;
  dir: string;
  uri: (exportName?: string) => string;
  /** Aborts the server and waits until every connection closed. */
  stop: () => Promise<void>;
  /** Settles when listenAndServe does. */
  done: Promise<void>;
}

export const MiB = 1024 * 1024;

/**
 * Starts listenAndServe on `DIR/nbd.sock`; default: one 64 MiB MemoryDevice named "".
 * `listen` may be another build's listenAndServe (the worker-thread tests use dist/).
 */
export async function startOurServer(
  exports?: Export[],
  opts: ServeOptions = {},
  listen: typeof listenAndServe = listenAndServe,
): Promise<OurServer> {
  const { dir, cleanup } = tempDir('nbd-ours-');
  const socket = join(dir, 'nbd.sock');
  const ac = new AbortController();
  const exps = exports ?? [{ name: '', description: 'test memory', size: 64 * MiB, device: new MemoryDevice(64 * MiB) }];
  const up = Promise.withResolvers<void>();
  const done = listen({ path: socket }, exps, { ...opts, signal: ac.signal, onListen: () => up.resolve() });
  await Promise.race([up.promise, done]);
  let stopped = false;
  return {
    socket,
    dir,
    uri: (name = '') => unixUri(socket, name),
    done,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      ac.abort();
      await done;
      cleanup();
    },
  };
}

/** A raw NBD client: write bytes, read frames decoded by ServerStreamDecoder. */
export class RawClient {
  readonly decoder = new ServerStreamDecoder();
  readonly sock: Socket;
  closed = false;
  private waiters: (() => void)[] = [];
  private error: Error | undefined;

  private constructor(path: string) {
    this.sock = connect(path);
    this.sock.on('data', (d: Buffer) => {
      this.decoder.push(d);
      this.wake();
    });
    this.sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    this.sock.on('error', (e) => {
      this.error = e;
    });
  }

  static async connect(path: string): Promise<RawClient> {
    const c = new RawClient(path);
    await new Promise<void>((resolve, reject) => {
      c.sock.once('connect', resolve);
      c.sock.once('error', reject);
    });
    return c;
  }

  write(bytes: Uint8Array): void {
    this.sock.write(bytes);
  }

  /** The next frame, or null if the server closed first. Throws after `timeoutMs`. */
  async frame(timeoutMs = 5000): Promise<ServerFrame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.decoder.next();
      if (f !== undefined) return f;
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms (error: ${this.error?.message ?? 'none'})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolves true if the server closes the connection within `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closed;
  }

  close(): void {
    this.sock.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
