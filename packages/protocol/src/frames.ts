// Incremental stream decoders: fed arbitrary slices of a byte stream, they yield
// whole frames. One decoder per direction; the owner switches its phase as the
// conversation moves on (pg-protocol's Parser, tokio-util's Decoder contract).
//
// Limits are checked on headers, before any payload is buffered, so a peer's
// claimed length never causes an allocation by itself. Payloads are returned as
// views into the received chunk when they lie within one, else copied once.

import { ByteQueue } from './byte-queue.js';
import { type ChunkHeader, readChunkHeader } from './chunks.js';
import { Limits, Magic, Size } from './constants.js';
import { ProtocolError } from './errors.js';
import { decodeClientFlags, decodeExportNameReply, decodeGreeting, type Greeting } from './handshake.js';
import { decodeSimpleReply, type Request, readRequestHeader, requestPayloadLength } from './transmission.js';

// ======================================================= client → server

/** What a server reads from a client. */
export type ClientFrame =
  | { kind: 'client-flags'; flags: number }
  | { kind: 'option'; option: number; data: Uint8Array }
  /**
   * A transmission request. `payload` is the WRITE (or PAYLOAD_LEN) data. When the
   * claimed payload exceeds `maxPayload`, `oversized` is set, no payload is kept,
   * and the decoder discards those bytes as they arrive, so the stream stays in sync.
   */
  | { kind: 'request'; request: Request; payload?: Uint8Array; oversized?: boolean };

/** Limits of a {@link ClientStreamDecoder}, in bytes: checked on headers before any payload is buffered. */
export interface ClientDecoderLimits {
  /** Largest option data accepted; more is a ProtocolError. Default 64 KiB. */
  maxOptionLength?: number;
  /** Largest request payload buffered; larger ones are drained. Default 32 MiB. */
  maxPayload?: number;
  /** Largest payload drained to stay in sync; more is a ProtocolError. Default 4 GiB. */
  maxDrain?: number;
}

/** Decodes the client → server stream (the server's side of the conversation). */
export class ClientStreamDecoder {
  /**
   * 'client-flags' first, then 'options' (by itself); `startTransmission()` after the
   * handshake. A decoder made for transmission only (no handshake) starts there.
   */
  private state: 'client-flags' | 'options' | 'transmission' = 'client-flags';
  private ext = false;
  /** Largest option data accepted, in bytes; more is a ProtocolError (default 64 KiB). */
  maxOptionLength: number;
  /** Largest request payload buffered, in bytes; larger ones are drained and flagged `oversized` (default 32 MiB). */
  maxPayload: number;
  /** Largest payload drained to stay in sync, in bytes; more is a ProtocolError (default 4 GiB). */
  maxDrain: number;
  private readonly queue = new ByteQueue();
  private pendingHeader: Request | undefined; // header decoded, payload still arriving
  private pendingLength = 0; // that payload's length
  private discard = 0; // bytes of an oversized payload still to drop

  constructor(limits: ClientDecoderLimits = {}) {
    this.maxOptionLength = limits.maxOptionLength ?? 64 * 1024;
    this.maxPayload = limits.maxPayload ?? Limits.DEFAULT_MAX_PAYLOAD;
    this.maxDrain = limits.maxDrain ?? 2 ** 32;
  }

  /** Where the conversation is. */
  get phase(): 'client-flags' | 'options' | 'transmission' {
    return this.state;
  }

  /** Requests are 32-byte extended headers (set by `startTransmission`). */
  get extended(): boolean {
    return this.ext;
  }

  /** The handshake is over: requests follow, 32 bytes long when `extended` headers were negotiated. */
  startTransmission(extended: boolean, maxPayload = this.maxPayload): void {
    this.state = 'transmission';
    this.ext = extended;
    this.maxPayload = maxPayload;
  }

  /** Option requests come next without client flags first (after STARTTLS, over TLS). */
  startOptions(): void {
    this.state = 'options';
  }

  /** Appends received bytes (kept as a view, not copied); call `next()` to take whole frames out. */
  push(chunk: Uint8Array): void {
    this.queue.push(chunk);
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.queue.length;
  }

  /** True while a frame has started but not finished (e.g. a WRITE payload is still arriving). */
  get midFrame(): boolean {
    return this.pendingHeader !== undefined || this.discard > 0 || this.queue.length > 0;
  }

  /**
   * Everything buffered, consumed: bytes handed over raw (after STARTTLS), or moved by
   * the owner (e.g. into a fresh read buffer) and pushed back. A frame in progress
   * keeps its decoded state, so pushing the same bytes back resumes it.
   */
  drain(): Uint8Array {
    return this.queue.drain();
  }

  /**
   * During transmission: bytes still missing before `next()` can return the request in
   * progress (its header first, then its payload once the header is here), so a reader
   * can size its next read. 0 when a request is complete, while an oversized payload is
   * dropped, for a header claiming more than `maxPayload`, or in other phases.
   */
  get wanted(): number {
    if (this.state !== 'transmission' || this.discard > 0) return 0;
    const q = this.queue;
    if (this.pendingHeader !== undefined) return Math.max(0, this.pendingLength - q.length);
    const size = this.ext ? Size.EXTENDED_REQUEST : Size.REQUEST;
    if (q.length < size) return size - q.length;
    let n: number;
    try {
      n = requestPayloadLength(readRequestHeader(q.peek(size), 0, this.ext), this.ext);
    } catch {
      return 0; // a bad header: next() reports it
    }
    if (n > this.maxPayload) return 0;
    return Math.max(0, size + n - q.length);
  }

  /** The next whole frame, or undefined until more bytes arrive. Throws ProtocolError on a bad stream. */
  next(): ClientFrame | undefined {
    const q = this.queue;
    if (this.discard > 0) {
      this.discard -= q.skip(this.discard);
      if (this.discard > 0) return undefined;
    }
    switch (this.state) {
      case 'client-flags': {
        if (q.length < Size.CLIENT_FLAGS) return undefined;
        const flags = decodeClientFlags(q.take(Size.CLIENT_FLAGS));
        this.state = 'options'; // options always follow the client flags
        return { kind: 'client-flags', flags };
      }
      case 'options':
        return this.nextOption();
      case 'transmission':
        return this.nextRequest();
    }
  }

  // u64 IHAVEOPT | u32 option | u32 length | data
  private nextOption(): ClientFrame | undefined {
    const q = this.queue;
    if (q.length < Size.OPTION_HEADER) return undefined;
    const h = q.peek(Size.OPTION_HEADER);
    const v = new DataView(h.buffer, h.byteOffset, Size.OPTION_HEADER);
    if (v.getBigUint64(0) !== Magic.IHAVEOPT) throw new ProtocolError('option: bad magic (expected IHAVEOPT)');
    const option = v.getUint32(8);
    const length = v.getUint32(12);
    if (length > this.maxOptionLength) {
      throw new ProtocolError(`option ${option}: length ${length} exceeds the limit of ${this.maxOptionLength}`);
    }
    if (q.length < Size.OPTION_HEADER + length) return undefined;
    q.skip(Size.OPTION_HEADER);
    return { kind: 'option', option, data: q.take(length) };
  }

  private nextRequest(): ClientFrame | undefined {
    const q = this.queue;
    let request = this.pendingHeader;
    if (request === undefined) {
      const size = this.ext ? Size.EXTENDED_REQUEST : Size.REQUEST;
      if (q.length < size) return undefined;
      request = readRequestHeader(q.peek(size), 0, this.ext);
      q.skip(size);
      const n = requestPayloadLength(request, this.ext);
      if (n === 0) return { kind: 'request', request };
      if (n > this.maxPayload) {
        if (n > this.maxDrain) throw new ProtocolError(`request: payload of ${request.length} bytes is too large to drain`);
        this.discard = n - q.skip(n);
        return { kind: 'request', request, oversized: true };
      }
      this.pendingLength = n;
    }
    const n = this.pendingLength;
    if (q.length < n) {
      this.pendingHeader = request;
      return undefined;
    }
    this.pendingHeader = undefined;
    return { kind: 'request', request, payload: q.take(n) };
  }
}

// ======================================================= server → client

/** What a client reads from a server. */
export type ServerFrame =
  | { kind: 'greeting'; greeting: Greeting }
  | { kind: 'option-reply'; option: number; type: number; data: Uint8Array }
  | { kind: 'export-name-reply'; size: bigint; flags: number }
  /** `data` is present for a successful simple reply to a READ. */
  | { kind: 'simple-reply'; error: number; cookie: bigint; data?: Uint8Array }
  | { kind: 'chunk'; header: ChunkHeader; payload: Uint8Array };

/** Limits of a {@link ServerStreamDecoder}, in bytes: checked on headers before any payload is buffered. */
export interface ServerDecoderLimits {
  /** Largest option reply accepted. Default 1 MiB. */
  maxOptionReply?: number;
  /** Largest chunk payload accepted. Default 32 MiB + 8 (a READ chunk's offset and data), or 2^20 extended extents if larger. */
  maxChunk?: number;
}

/** Decodes the server → client stream (the client's side of the conversation). */
export class ServerStreamDecoder {
  /**
   * 'greeting' first; then 'options' (newstyle) or 'transmission' (oldstyle), by
   * itself; 'export-name' from `expectExportNameReply()`, then 'transmission' by
   * itself; or 'transmission' from `startTransmission()` after GO's ACK.
   */
  private state: 'greeting' | 'options' | 'export-name' | 'transmission' = 'greeting';
  /** NO_ZEROES negotiated: the export-name reply is 10 bytes, not 134. */
  private noZeroes = false;
  private ext = false;
  /** Largest option reply data accepted, in bytes; more is a ProtocolError (default 1 MiB). */
  maxOptionReply: number;
  /** Largest reply chunk payload accepted, in bytes; more is a ProtocolError (default: 32 MiB + 8, or 2^20 extended extents if larger). */
  maxChunk: number;
  /**
   * For simple replies: the READ payload length expected for `cookie`, or
   * undefined if `cookie` is not a READ. Simple replies cannot be parsed without it.
   */
  readLength: (cookie: bigint) => number | undefined = () => undefined;
  private readonly queue = new ByteQueue();
  private pendingSimple: { error: number; cookie: bigint; length: number } | undefined;

  constructor(limits: ServerDecoderLimits = {}) {
    this.maxOptionReply = limits.maxOptionReply ?? 1024 * 1024;
    this.maxChunk = limits.maxChunk ?? Math.max(Limits.DEFAULT_MAX_PAYLOAD + 8, 8 + 16 * Limits.MAX_EXTENTS_PER_CHUNK);
  }

  /** Where the conversation is. */
  get phase(): 'greeting' | 'options' | 'export-name' | 'transmission' {
    return this.state;
  }

  /** EXTENDED_HEADERS negotiated: every reply is a 32-byte extended chunk (set by `startTransmission`). */
  get extended(): boolean {
    return this.ext;
  }

  /** NBD_OPT_EXPORT_NAME was sent: its reply comes next (10 bytes if NO_ZEROES was negotiated). */
  expectExportNameReply(noZeroes: boolean): void {
    this.state = 'export-name';
    this.noZeroes = noZeroes;
  }

  /** GO was acknowledged: replies follow, as extended chunks if `extended` headers were negotiated. */
  startTransmission(extended: boolean): void {
    this.state = 'transmission';
    this.ext = extended;
  }

  /** Option replies come next without a greeting first (after STARTTLS, over TLS). */
  startOptions(): void {
    this.state = 'options';
  }

  /** Appends received bytes (kept as a view, not copied); call `next()` to take whole frames out. */
  push(chunk: Uint8Array): void {
    this.queue.push(chunk);
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.queue.length;
  }

  /**
   * Everything buffered, consumed: bytes handed over raw (after STARTTLS), or moved by the owner
   * and pushed back. A frame in progress keeps its decoded state, so pushing them back resumes it.
   */
  drain(): Uint8Array {
    return this.queue.drain();
  }

  /**
   * During transmission: bytes still missing before `next()` can return the frame in
   * progress (its header first, then its payload once the header is here), so a reader
   * can size its next read. 0 when a frame is complete, the header is bad, or in
   * other phases. Never more than a header plus `maxChunk`.
   */
  get wanted(): number {
    if (this.state !== 'transmission') return 0;
    const q = this.queue;
    const pending = this.pendingSimple;
    if (pending !== undefined) return Math.max(0, pending.length - q.length);
    const first = this.ext ? Size.EXTENDED_CHUNK : Size.SIMPLE_REPLY;
    if (q.length < 4) return first - q.length;
    const magic = peekMagic(q);
    if (magic === Magic.SIMPLE_REPLY) return Math.max(0, Size.SIMPLE_REPLY - q.length);
    const size = this.ext ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
    if (q.length < size) return size - q.length;
    let length: number;
    try {
      length = readChunkHeader(q.peek(size), 0, this.ext).length;
    } catch {
      return 0; // a bad header: next() reports it
    }
    if (length > this.maxChunk) return 0;
    return Math.max(0, size + length - q.length);
  }

  /** The next whole frame, or undefined until more bytes arrive. Throws ProtocolError on a bad stream. */
  next(): ServerFrame | undefined {
    switch (this.state) {
      case 'greeting':
        return this.nextGreeting();
      case 'options':
        return this.nextOptionReply();
      case 'export-name':
        return this.nextExportNameReply();
      case 'transmission':
        return this.nextReply();
    }
  }

  private nextGreeting(): ServerFrame | undefined {
    const q = this.queue;
    if (q.length < 16) return undefined;
    const h = q.peek(16);
    const v = new DataView(h.buffer, h.byteOffset, 16);
    if (v.getBigUint64(0) !== Magic.NBDMAGIC) throw new ProtocolError('greeting: bad magic, not an NBD server');
    const style = v.getBigUint64(8);
    const size = style === Magic.IHAVEOPT ? Size.NEWSTYLE_GREETING : style === Magic.OLDSTYLE ? Size.OLDSTYLE_GREETING : 0;
    if (size === 0) throw new ProtocolError(`greeting: unknown style magic 0x${style.toString(16)}`);
    if (q.length < size) return undefined;
    const greeting = decodeGreeting(q.take(size));
    this.state = greeting.style === 'oldstyle' ? 'transmission' : 'options';
    return { kind: 'greeting', greeting };
  }

  // u64 OPTION_REPLY magic | u32 option | u32 type | u32 length | data
  private nextOptionReply(): ServerFrame | undefined {
    const q = this.queue;
    if (q.length < Size.OPTION_REPLY_HEADER) return undefined;
    const h = q.peek(Size.OPTION_REPLY_HEADER);
    const v = new DataView(h.buffer, h.byteOffset, Size.OPTION_REPLY_HEADER);
    if (v.getBigUint64(0) !== Magic.OPTION_REPLY) throw new ProtocolError('option reply: bad magic');
    const option = v.getUint32(8);
    const type = v.getUint32(12);
    const length = v.getUint32(16);
    if (length > this.maxOptionReply) {
      throw new ProtocolError(`option reply: length ${length} exceeds the limit of ${this.maxOptionReply}`);
    }
    if (q.length < Size.OPTION_REPLY_HEADER + length) return undefined;
    q.skip(Size.OPTION_REPLY_HEADER);
    return { kind: 'option-reply', option, type, data: q.take(length) };
  }

  private nextExportNameReply(): ServerFrame | undefined {
    const size = this.noZeroes ? Size.EXPORT_NAME_REPLY_NO_ZEROES : Size.EXPORT_NAME_REPLY;
    if (this.queue.length < size) return undefined;
    const reply = decodeExportNameReply(this.queue.take(size));
    this.state = 'transmission';
    return { kind: 'export-name-reply', ...reply };
  }

  private nextReply(): ServerFrame | undefined {
    const q = this.queue;
    const pending = this.pendingSimple;
    if (pending !== undefined) {
      if (q.length < pending.length) return undefined;
      this.pendingSimple = undefined;
      return { kind: 'simple-reply', error: pending.error, cookie: pending.cookie, data: q.take(pending.length) };
    }
    if (q.length < 4) return undefined;
    const magic = peekMagic(q);
    if (magic === Magic.SIMPLE_REPLY) {
      if (this.ext) throw new ProtocolError('simple reply received after extended headers were negotiated');
      if (q.length < Size.SIMPLE_REPLY) return undefined;
      const { error, cookie } = decodeSimpleReply(q.take(Size.SIMPLE_REPLY));
      const length = error === 0 ? this.readLength(cookie) : undefined;
      if (length === undefined || length === 0) return { kind: 'simple-reply', error, cookie };
      this.pendingSimple = { error, cookie, length };
      return this.nextReply();
    }
    const expected = this.ext ? Magic.EXTENDED_REPLY : Magic.STRUCTURED_REPLY;
    if (magic !== expected)
      throw new ProtocolError(`reply: unexpected magic 0x${magic.toString(16)} (expected 0x${expected.toString(16)})`);
    const size = this.ext ? Size.EXTENDED_CHUNK : Size.STRUCTURED_CHUNK;
    if (q.length < size) return undefined;
    const header = readChunkHeader(q.peek(size), 0, this.ext);
    if (header.length > this.maxChunk) {
      throw new ProtocolError(`reply chunk: length ${header.length} exceeds the limit of ${this.maxChunk}`);
    }
    if (q.length < size + header.length) return undefined;
    q.skip(size);
    return { kind: 'chunk', header, payload: q.take(header.length) };
  }
}

/** The first four bytes buffered, as a big-endian u32 (a reply's magic). */
function peekMagic(q: ByteQueue): number {
  const m = q.peek(4);
  return ((m[0]! << 24) | (m[1]! << 16) | (m[2]! << 8) | m[3]!) >>> 0;
}
