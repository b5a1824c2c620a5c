// nbdkit's data plugin: a small disk image given inline (nbdkit's data format, or
// bytes), padded with zeroes or truncated to `size`, served from sparse memory.
// Writable unless `readOnly` (writes last as long as the device, as nbdkit's).
import { isAllZero, NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device, DeviceExtent, DeviceRecipe, Loan } from '@nbd/server';
import { SparseMemoryDevice } from '../memory/sparse-memory-device.js';
import { type DataSink, defaultDataWork, writeData } from './data-eval.js';
import { type DataExpr, parseDataFormat } from './data-format.js';
import { sourceRecipe } from './source-recipe.js';

/** Options of {@link DataDevice}. */
export interface DataDeviceOptions {
  /** Truncate or extend (with zeroes) to this size; default: the data's own length. */
  size?: number;
  /** Refuse writes (nbdkit -r). Only a read-only DataDevice can be shared with worker threads. */
  readOnly?: boolean;
  /**
   * Most steps building the image from a data-format string may take: a step per byte
   * written (overlapping writes each time) and per expression visited. Only what lands
   * within the size is built. Default: 64 Mi plus four per byte of the size, at most
   * 4 Gi; a string that costs more is refused (NbdInvalidArgumentError) before any is built.
   */
  maxWork?: number;
}

/** What a DataDevice is made from: nbdkit's data format, raw bytes, or an array of byte values. */
export type DataSpec = string | Uint8Array | readonly number[];

/** A data-format string parsed, or bytes as they are (an array of byte values checked). */
function exprOf(data: DataSpec): DataExpr {
  if (typeof data === 'string') return parseDataFormat(data);
  if (data instanceof Uint8Array) return { kind: 'bytes', length: data.length, bytes: data };
  const bytes = Uint8Array.from(data, (b, i) => {
    if (!Number.isInteger(b) || b < 0 || b > 255) throw new NbdInvalidArgumentError(`DataDevice: element ${i} (${b}) is not a byte`);
    return b;
  });
  return { kind: 'bytes', length: bytes.length, bytes };
}

/** Writes into sparse memory; zeroes past the last byte written are already there. */
function memorySink(mem: SparseMemoryDevice): DataSink {
  let written = 0;
  return {
    write(at, bytes) {
      place(mem, bytes, at);
      written = Math.max(written, at + bytes.length);
    },
    zero(at, n) {
      const end = Math.min(at + n, written);
      if (end > at) mem.trim(at, end - at);
    },
  };
}

/** Writes `bytes` at `at`, page by page; pages of zeroes are cleared instead, so they stay (or become) holes, as nbdkit's. */
function place(mem: SparseMemoryDevice, bytes: Uint8Array, at: number): void {
  const page = mem.pageSize;
  for (let pos = 0; pos < bytes.length; ) {
    const n = Math.min(page - ((at + pos) % page), bytes.length - pos);
    const part = bytes.subarray(pos, pos + n);
    if (isAllZero(part)) mem.trim(at + pos, n);
    else mem.writeAt(part, at + pos);
    pos += n;
  }
}

/**
 * nbdkit's data plugin: `new DataDevice('( 0x55 0xAA )*2048')`,
 * `new DataDevice('"Hello"*2000', { size: 8192 })`, `new DataDevice(bytes, { size: 1 << 20 })`.
 */
export class DataDevice implements Device {
  readonly size: number;
  readonly readOnly: boolean;
  readonly multiConn = true;
  readonly fua = true;
  readonly writeAt?: NonNullable<Device['writeAt']>;
  readonly trim?: NonNullable<Device['trim']>;
  readonly zero?: NonNullable<Device['zero']>;
  /** Only a read-only DataDevice is shared with worker threads (writes would stay in one thread). */
  readonly share?: () => DeviceRecipe;
  private readonly mem: SparseMemoryDevice;

  constructor(data: DataSpec, opts: DataDeviceOptions = {}) {
    const expr = exprOf(data);
    this.size = opts.size ?? expr.length;
    this.mem = new SparseMemoryDevice(this.size);
    this.readOnly = opts.readOnly ?? false;
    const maxWork = opts.maxWork ?? defaultDataWork(this.size);
    if (!(maxWork >= 0)) throw new NbdInvalidArgumentError(`DataDevice: maxWork ${maxWork} is not a number of steps`);
    writeData(expr, this.size, memorySink(this.mem), maxWork);
    const mem = this.mem;
    if (this.readOnly) {
      const spec = typeof data === 'string' ? data : Uint8Array.from(data);
      this.share = () => sourceRecipe({ kind: 'data', data: spec, size: this.size, maxWork });
    } else {
      this.writeAt = (buf, offset) => mem.writeAt(buf, offset);
      this.trim = (offset, length) => mem.trim(offset, length);
      this.zero = (offset, length, o) => mem.zero(offset, length, o);
    }
  }

  /** Bytes of memory the image holds. */
  get allocated(): number {
    return this.mem.allocated;
  }

  readAt(buf: Uint8Array, offset: number): void {
    this.mem.readAt(buf, offset);
  }

  lend(offset: number, length: number): Loan {
    return this.mem.lend(offset, length);
  }

  extents(offset: number, length: number, opts: { reqOne: boolean }): DeviceExtent[] {
    return this.mem.extents(offset, length, opts);
  }

  sync(): void {}

  cache(): void {}
}
