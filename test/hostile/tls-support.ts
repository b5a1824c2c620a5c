// A raw client that negotiates STARTTLS with a PSK identity of its choosing, then speaks
// options and requests over TLS through the codecs: what a hostile peer holding (or
// stealing) a key does. And a PSK file with the users the security tables use.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import tls, { type TLSSocket } from 'node:tls';
import { ClientFlag, encodeClientFlags, encodeOptionRequest, OptionReply, type ServerFrame, ServerStreamDecoder } from '@nbd/protocol';

/** PSK users: alice (let in), mallory (refused by preconnect), eve (refused by the open hook). */
export const PSK_USERS = ['alice', 'mallory', 'eve'] as const;
export type PskUser = (typeof PSK_USERS)[number];

/** Writes `keys.psk` (psktool's format) in `dir`; returns the path and the keys. */
export function writePskFile(dir: string): { path: string; keys: Map<string, Buffer> } {
  const keys = new Map(PSK_USERS.map((u) => [u, randomBytes(32)]));
  const path = join(dir, 'keys.psk');
  writeFileSync(path, [...keys].map(([u, k]) => `${u}:${k.toString('hex')}\n`).join(''));
  return { path, keys };
}

/** Frames from a byte stream, as RawClient has them, for any socket. */
class Frames {
  readonly decoder = new ServerStreamDecoder();
  closed = false;
  private wake: (() => void) | undefined;

  constructor(readonly sock: TLSSocket) {
    this.decoder.startOptions();
    sock.on('data', (d: Buffer) => {
      this.decoder.push(d);
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => {});
  }

  /** The next frame, or null once the server closed. */
  async frame(timeoutMs = 5000): Promise<ServerFrame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.decoder.next();
      if (f !== undefined) return f;
      if (this.closed) return null;
      if (Date.now() >= deadline) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }
}

/** A client past STARTTLS, authenticated as a PSK user. */
export class TlsRawClient extends Frames {
  /** Connects to `socketPath`, sends STARTTLS and completes TLS as `user` with `key`. */
  static async start(socketPath: string, user: string, key: Buffer): Promise<TlsRawClient> {
    const plain = connect(socketPath);
    await new Promise((r, j) => (plain.once('connect', r), plain.once('error', j)));
    const d = new ServerStreamDecoder();
    const next = async (): Promise<ServerFrame> => {
      for (;;) {
        const f = d.next();
        if (f !== undefined) return f;
        const chunk = await new Promise<Buffer>((r, j) => (plain.once('data', r), plain.once('close', () => j(new Error('closed')))));
        d.push(chunk);
      }
    };
    await next(); // greeting
    plain.write(
      Buffer.concat([encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES), encodeOptionRequest({ kind: 'starttls' })]),
    );
    const ack = await next();
    if (ack.kind !== 'option-reply' || ack.type !== OptionReply.ACK)
      throw new Error(`STARTTLS was not acknowledged: ${JSON.stringify(ack)}`);
    const sock = tls.connect({
      socket: plain,
      pskCallback: () => ({ psk: key, identity: user }),
      ciphers: `${tls.DEFAULT_CIPHERS}:PSK-AES128-GCM-SHA256`,
      checkServerIdentity: () => undefined,
    });
    await new Promise((r, j) => (sock.once('secureConnect', r), sock.once('error', j)));
    return new TlsRawClient(sock);
  }

  write(bytes: Uint8Array): void {
    this.sock.write(bytes);
  }

  /** Sends an option; its replies up to the final one, or null if the server closed. */
  async option(req: Parameters<typeof encodeOptionRequest>[0]): Promise<ServerFrame[] | null> {
    this.write(encodeOptionRequest(req));
    const out: ServerFrame[] = [];
    for (;;) {
      const f = await this.frame();
      if (f === null) return null;
      out.push(f);
      if (f.kind === 'option-reply' && (f.type === OptionReply.ACK || (f.type & 0x80000000) !== 0)) return out;
    }
  }

  /** Resolves true if the server closes within `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    try {
      while ((await this.frame(timeoutMs)) !== null);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
