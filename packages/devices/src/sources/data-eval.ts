// Writes a parsed data-format expression (data-format.ts) into a window [0, size):
// only what lands inside is ever built, so `(1 @+4095)*100000000` with size=1M
// costs 256 copies, not 10^8. A repeat of a small expression is built once as a
// tile of whole copies and laid across the window a tile at a time. Every step is
// charged to a budget; a string that would cost more (groups overlapping many times
// over, nested groups multiplying them, more data than the budget) is refused
// before anything is written.
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { DataExpr } from './data-format.js';

/** Where the bytes go, in order (later writes win). */
export interface DataSink {
  write(at: number, bytes: Uint8Array): void;
  /** `n` bytes of zeroes: what a group leaves unwritten. */
  zero(at: number, n: number): void;
}

/** A repeat's copies are built into tiles of about this many bytes. */
const TILE = 1024 * 1024;

/** Tiles kept for repeats visited again, at most this many bytes of them (others are built again, and charged again). */
const TILE_CACHE = 64 * 1024 * 1024;

/** Zeroes cost a step per this many bytes (they are a fill or a trim, not a copy). */
const ZERO_STEP = 4096;

/** The default work budget for a window of `size` bytes: 64 Mi steps plus four per byte, at most 4 Gi. */
export function defaultDataWork(size: number): number {
  return Math.min(64 * 1024 * 1024 + 4 * size, 4 * 1024 * 1024 * 1024);
}

/** floor(x / d) for safe integers, exact even where the division rounds. */
function floorDiv(x: number, d: number): number {
  let k = Math.floor(x / d);
  while (k * d > x) k--;
  while ((k + 1) * d <= x) k++;
  return k;
}

/** A sink into a buffer (a tile being built). */
function bufferSink(buf: Uint8Array): DataSink {
  return {
    write: (at, bytes) => buf.set(bytes, at),
    zero: (at, n) => void buf.fill(0, at, at + n),
  };
}

const nowhere: DataSink = { write() {}, zero() {} };

class Evaluator {
  private used = 0;
  /** Tiles of whole copies, by repeat (each built once, however often the repeat is visited). */
  private readonly tiles = new Map<DataExpr, Uint8Array>();
  private cached = 0;

  constructor(
    private readonly limit: number,
    private readonly size: number,
  ) {}

  /** The budget starts again (tiles already built stay, as does their cost in the dry run). */
  restart(): void {
    this.used = 0;
  }

  charge(n: number): void {
    this.used += n;
    if (this.used > this.limit)
      throw new NbdInvalidArgumentError(
        `data format: writing the data within ${this.size} bytes takes more than ${this.limit} steps (its writes overlap too many times over, or it holds too much data: see DataDevice's maxWork)`,
      );
  }

  /** The top-level list: its items in order, what lies between them left alone. */
  top(e: DataExpr, sink: DataSink): void {
    if (e.kind !== 'seq') {
      this.emit(e, 0, 0, this.size, sink);
      return;
    }
    this.charge(e.items.length);
    for (const item of e.items) this.emit(item.expr, item.at, 0, this.size, sink);
  }

  /** Writes the bytes of `e`, placed at `base`, that fall in [lo, hi): all of them (a group's gaps are zeroes). */
  emit(e: DataExpr, base: number, lo: number, hi: number, sink: DataSink): void {
    const from = Math.max(lo, base);
    const to = Math.min(hi, base + e.length);
    if (from >= to) return;
    this.charge(1);
    switch (e.kind) {
      case 'bytes':
        this.charge(to - from);
        sink.write(from, e.bytes.subarray(from - base, to - base));
        return;
      case 'seq':
        this.charge(e.items.length + Math.ceil((to - from) / ZERO_STEP));
        sink.zero(from, to - from);
        for (const item of e.items) this.emit(item.expr, base + item.at, from, to, sink);
        return;
      case 'slice':
        this.emit(e.expr, base - e.from, from, to, sink);
        return;
      case 'repeat':
        this.repeat(e, base, from, to, sink);
    }
  }

  private repeat(e: DataExpr & { kind: 'repeat' }, base: number, from: number, to: number, sink: DataSink): void {
    const unit = e.expr.length;
    const first = floorDiv(from - base, unit);
    const end = floorDiv(to - base - 1, unit) + 1;
    if (unit > TILE || end - first <= 2) {
      for (let k = first; k < end; k++) this.emit(e.expr, base + k * unit, from, to, sink);
      return;
    }
    const tile = this.tileOf(e);
    for (let at = base + first * unit; at < to; at += tile.length) {
      const a = Math.max(at, from);
      const b = Math.min(at + tile.length, to);
      this.charge(1 + b - a);
      sink.write(a, tile.subarray(a - at, b - at));
    }
  }

  /** Whole copies of the repeat's expression, about TILE bytes of them (fewer if the repeat or the window is shorter). */
  private tileOf(e: DataExpr & { kind: 'repeat' }): Uint8Array {
    const known = this.tiles.get(e);
    if (known !== undefined) return known;
    const unit = e.expr.length;
    const copies = Math.min(e.count, Math.max(1, Math.floor(TILE / unit)), Math.ceil(this.size / unit) + 1);
    this.charge(unit * copies);
    const tile = new Uint8Array(unit * copies);
    this.emit(e.expr, 0, 0, unit, bufferSink(tile));
    // Doubling copies: log2(copies) calls.
    for (let filled = unit; filled < tile.length; filled *= 2) tile.copyWithin(filled, 0, Math.min(filled, tile.length - filled));
    if (this.cached + tile.length <= TILE_CACHE) {
      this.tiles.set(e, tile);
      this.cached += tile.length;
    }
    return tile;
  }
}

/**
 * Writes the bytes of a parsed data string that land in [0, size) to `sink`, in
 * order. A dry run with the same budget comes first, so a string that costs more
 * than `maxWork` steps is refused (NbdInvalidArgumentError) before the sink sees a byte.
 */
export function writeData(expr: DataExpr, size: number, sink: DataSink, maxWork = defaultDataWork(size)): void {
  const ev = new Evaluator(maxWork, size);
  ev.top(expr, nowhere);
  ev.restart();
  ev.top(expr, sink);
}
