// Cursor-based big-endian reading and writing over Uint8Array. Internal to the codecs.
import { Limits } from './constants.js';
import { ProtocolError } from './errors.js';

const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of the string (a name must come back byte for byte), not dropped.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** UTF-8 bytes of `s`, refusing strings the spec forbids (over 4096 bytes). */
export function utf8(s: string, what = 'string'): Uint8Array {
  const bytes = encoder.encode(s);
  if (bytes.length > Limits.MAX_STRING) {
    throw new ProtocolError(`${what} is ${bytes.length} bytes; the limit is ${Limits.MAX_STRING}`);
  }
  return bytes;
}

/** Reads fields in order; every read checks the bounds first and throws ProtocolError if short. */
export class Reader {
  private readonly view: DataView;
  pos = 0;

  constructor(
    readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  need(n: number, field: string): void {
    if (n > this.remaining) {
      throw new ProtocolError(`${this.what}: truncated at ${field} (need ${n} bytes, have ${this.remaining})`);
    }
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }

  bytesOf(n: number, field: string): Uint8Array {
    this.need(n, field);
    const v = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** A UTF-8 string of `n` bytes, at most 4096. */
  string(n: number, field: string): string {
    if (n > Limits.MAX_STRING) {
      throw new ProtocolError(`${this.what}: ${field} is ${n} bytes; the limit is ${Limits.MAX_STRING}`);
    }
    const raw = this.bytesOf(n, field);
    try {
      return decoder.decode(raw);
    } catch {
      throw new ProtocolError(`${this.what}: ${field} is not valid UTF-8`);
    }
  }

  /** The rest of the frame as a string (e.g. a description or an error message). */
  rest(field: string): string {
    return this.string(this.remaining, field);
  }

  end(): void {
    if (this.remaining !== 0) {
      throw new ProtocolError(`${this.what}: ${this.remaining} unexpected trailing bytes`);
    }
  }
}

/** Builds a frame of known size; `finish()` checks the size was exactly right. */
export class Writer {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  pos = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  u16(v: number): this {
    this.view.setUint16(this.pos, v);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.view.setUint32(this.pos, v >>> 0);
    this.pos += 4;
    return this;
  }

  u64(v: bigint): this {
    this.view.setBigUint64(this.pos, BigInt.asUintN(64, v));
    this.pos += 8;
    return this;
  }

  raw(b: Uint8Array): this {
    this.bytes.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  zeroes(n: number): this {
    this.pos += n; // the buffer starts zeroed
    return this;
  }

  finish(): Uint8Array {
    if (this.pos !== this.bytes.length) throw new Error(`internal: wrote ${this.pos} of ${this.bytes.length} bytes`);
    return this.bytes;
  }
}

/** Concatenates byte arrays into one. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
