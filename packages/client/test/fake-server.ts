// A scripted in-process NBD server for unit tests, built from the protocol codecs.
// Each test drives the conversation step by step and can misbehave on purpose.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type ChunkPayload,
  type ClientFrame,
  ClientStreamDecoder,
  decodeOptionRequest,
  encodeChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeSimpleReply,
  HandshakeFlag,
  Info,
  Option,
  OptionReply,
  type Request,
  TransmissionFlag,
} from '@nbd/protocol';
import { afterEach } from 'vitest';

export interface NegotiateOptions {
  size?: bigint;
  flags?: number;
  structured?: boolean;
  extended?: boolean;
  /** Meta contexts the server knows, name → id. */
  contexts?: Record<string, number>;
  blockSize?: { min: number; preferred: number; max: number };
  /** Answer GO with ERR_UNSUP (forcing EXPORT_NAME). */
  noGo?: boolean;
  /** Refuse every export but these names. */
  exports?: string[];
  /** Answer nothing from this option on (a stalled server). */
  silentOn?: string;
  /** Greet as plain (not fixed) newstyle: only EXPORT_NAME is possible. */
  plainNewstyle?: boolean;
}

export const RW_FLAGS =
  TransmissionFlag.HAS_FLAGS |
  TransmissionFlag.SEND_FLUSH |
  TransmissionFlag.SEND_FUA |
  TransmissionFlag.SEND_TRIM |
  TransmissionFlag.SEND_WRITE_ZEROES |
  TransmissionFlag.SEND_CACHE;

export class FakePeer {
  readonly decoder = new ClientStreamDecoder();
  extended = false;
  private frames: ClientFrame[] = [];
  private waiter: (() => void) | undefined;
  closed = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.decoder.push(d);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  async frame(): Promise<ClientFrame> {
    for (;;) {
      const f = this.frames.shift() ?? this.decoder.next();
      if (f) return f;
      if (this.closed) throw new Error('fake server: client closed');
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = undefined;
    }
  }

  async request(): Promise<Request & { payload?: Uint8Array }> {
    const f = await this.frame();
    if (f.kind !== 'request') throw new Error(`fake server: expected a request, got ${f.kind}`);
    return { ...f.request, payload: f.payload };
  }

  send(b: Uint8Array): void {
    this.socket.write(b);
  }

  chunk(cookie: bigint, payload: ChunkPayload, done = true, offset = 0n): void {
    this.send(encodeChunk(cookie, payload, { done, extended: this.extended, offset }));
  }

  simple(cookie: bigint, error = 0, data?: Uint8Array): void {
    this.send(encodeSimpleReply({ cookie, error }));
    if (data) this.send(data);
  }

  /** Fixed-newstyle negotiation up to GO (or EXPORT_NAME); returns the export name chosen. */
  async negotiate(o: NegotiateOptions = {}): Promise<string> {
    const size = o.size ?? 1n << 20n;
    const flags = o.flags ?? RW_FLAGS;
    const fixed = o.plainNewstyle ? 0 : HandshakeFlag.FIXED_NEWSTYLE;
    this.send(encodeGreeting({ style: 'newstyle', flags: fixed | HandshakeFlag.NO_ZEROES }));
    const cf = await this.frame();
    if (cf.kind !== 'client-flags') throw new Error('fake server: no client flags');
    this.decoder.startOptions();
    for (;;) {
      const f = await this.frame();
      if (f.kind !== 'option') throw new Error('fake server: expected an option');
      const req = decodeOptionRequest(f.option, f.data);
      if (req.kind === o.silentOn) return new Promise<string>(() => {});
      const reply = (r: Parameters<typeof encodeOptionReply>[1]) => this.send(encodeOptionReply(f.option, r));
      const err = (code: number, message = '') => reply({ kind: 'error', code, message });
      switch (req.kind) {
        case 'structured-reply':
          if (o.structured === false) err(OptionReply.ERR_UNSUP);
          else reply({ kind: 'ack' });
          break;
        case 'extended-headers':
          if (o.extended) {
            this.extended = true;
            reply({ kind: 'ack' });
          } else err(OptionReply.ERR_UNSUP, 'no extended headers here');
          break;
        case 'list':
          for (const name of o.exports ?? ['']) reply({ kind: 'server', name, description: `export ${name}` });
          reply({ kind: 'ack' });
          break;
        case 'list-meta-context':
        case 'set-meta-context':
          for (const [name, id] of Object.entries(o.contexts ?? {})) {
            if (req.queries.length === 0 || req.queries.includes(name)) reply({ kind: 'meta-context', id, name });
          }
          reply({ kind: 'ack' });
          break;
        case 'info':
        case 'go':
          if (o.exports && !o.exports.includes(req.name)) {
            err(OptionReply.ERR_UNKNOWN, `no export named "${req.name}"`);
            break;
          }
          if (req.kind === 'go' && o.noGo) {
            err(OptionReply.ERR_UNSUP);
            break;
          }
          reply({ kind: 'info', info: { kind: 'export', size, flags } });
          if (o.blockSize) reply({ kind: 'info', info: { kind: 'block-size', ...o.blockSize } });
          reply({ kind: 'ack' });
          if (req.kind === 'go') {
            this.decoder.startTransmission(this.extended);
            return req.name;
          }
          break;
        case 'export-name':
          if (o.exports && !o.exports.includes(req.name)) {
            this.socket.end(); // EXPORT_NAME has no error reply: a refusing server closes
            return req.name;
          }
          this.send(encodeExportNameReply({ size, flags }, true));
          this.decoder.startTransmission(false);
          return req.name;
        case 'abort':
          reply({ kind: 'ack' });
          this.socket.end();
          return '';
        default:
          err(OptionReply.ERR_UNSUP);
      }
    }
  }
}

export interface FakeServer {
  uri: string;
  /** Where it listens: `{ path }` of its unix socket, or `{ host, port }` for TCP. */
  address: { path: string } | { host: string; port: number };
  /** Settles when the script finishes; a throwing script rejects it. */
  done: Promise<void>;
  close: () => Promise<void>;
}

/** Listens on a fresh unix socket (or a TCP port on 127.0.0.1); each client that connects runs `script`. */
export async function fakeServer(script: (peer: FakePeer) => Promise<void>, opts: { tcp?: boolean } = {}): Promise<FakeServer> {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-fake-'));
  const path = join(dir, 's.sock');
  const done = Promise.withResolvers<void>();
  done.promise.catch(() => {});
  const sockets: Socket[] = [];
  const server: Server = createServer((s) => {
    sockets.push(s);
    script(new FakePeer(s)).then(done.resolve, done.reject);
  });
  if (opts.tcp) await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  else await new Promise<void>((r) => server.listen(path, r));
  const port = (server.address() as { port?: number }).port ?? 0;
  return {
    uri: opts.tcp ? `nbd://127.0.0.1:${port}/` : `nbd+unix:///?socket=${encodeURIComponent(path)}`,
    address: opts.tcp ? { host: '127.0.0.1', port } : { path },
    done: done.promise,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** fakeServer() for one test file: every server it starts is closed after each test. */
export function scopedFakeServers(): (script: (peer: FakePeer) => Promise<void>, opts?: { tcp?: boolean }) => Promise<FakeServer> {
  let servers: FakeServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });
  return async (script, opts) => {
    const s = await fakeServer(script, opts);
    servers.push(s);
    return s;
  };
}

export { Info, Option };
