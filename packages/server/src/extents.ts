// The one way a device builds its answer to `extents(offset, length)`: ranges added in
// order are clipped to the request, merged with an equal neighbour, and counted
// against a limit (the contract nbdkit's nbdkit_add_extent gives every plugin). The
// transmission engine uses it too, to clip and cap what a device returned.
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { DeviceExtent } from './device.js';

export interface ExtentListOptions {
  /** Only the first extent is wanted (NBD_CMD_FLAG_REQ_ONE). */
  reqOne?: boolean | undefined;
  /** At most this many extents (a reply chunk's limit). */
  maxCount?: number | undefined;
}

/** Extents of the `length` bytes at `offset`, built in order. */
export class ExtentList {
  /** The extents so far: contiguous from the start of the range, neighbours with equal flags merged. */
  readonly extents: DeviceExtent[] = [];
  private at: number;
  private readonly end: number;
  private full = false;
  private readonly reqOne: boolean;
  private readonly maxCount: number;

  constructor(offset: number, length: number, opts: ExtentListOptions = {}) {
    this.at = offset;
    this.end = offset + length;
    this.reqOne = opts.reqOne ?? false;
    this.maxCount = opts.maxCount ?? Number.POSITIVE_INFINITY;
  }

  /** Whether more extents are wanted: the range is not covered and no limit is reached. */
  get wanted(): boolean {
    return !this.full && this.at < this.end;
  }

  /** Where the next extent must start. */
  get next(): number {
    return this.at;
  }

  /**
   * Adds the `length` bytes at `offset` with `flags`. What lies before the current
   * position or past the end of the range is clipped; a gap before `offset` is a bug
   * in the caller. Returns whether more extents are wanted.
   */
  add(offset: number, length: number, flags: number): boolean {
    if (!this.wanted) return false;
    if (offset > this.at) throw new NbdInvalidArgumentError(`extent at ${offset} leaves a gap after ${this.at}`);
    return this.push(Math.min(offset + length, this.end) - this.at, flags);
  }

  /** Adds `length` bytes with `flags` at the current position (clipped to the range). Returns whether more are wanted. */
  push(length: number, flags: number): boolean {
    const n = Math.min(length, this.end - this.at);
    if (!this.wanted || !(n > 0)) return this.wanted;
    const last = this.extents[this.extents.length - 1];
    if (last !== undefined && last.flags === flags) last.length += n;
    else if (last !== undefined && (this.reqOne || this.extents.length >= this.maxCount)) {
      this.full = true;
      return false;
    } else this.extents.push({ length: n, flags });
    this.at += n;
    return this.wanted;
  }
}

/**
 * Calls `f(unit, inUnit, n, pos)` for each unit of `unitSize` bytes that the `length`
 * bytes at `offset` touch, in order: the unit's index, where the range starts in it, how
 * many of the range's bytes it holds, and where they start in the range. The walk every
 * device over paged or blocked storage does.
 */
export function eachUnit(
  offset: number,
  length: number,
  unitSize: number,
  f: (unit: number, inUnit: number, n: number, pos: number) => void,
): void {
  for (let pos = 0; pos < length; ) {
    const at = offset + pos;
    const inUnit = at % unitSize;
    const n = Math.min(unitSize - inUnit, length - pos);
    f(Math.floor(at / unitSize), inUnit, n, pos);
    pos += n;
  }
}

/**
 * Extents of the `length` bytes at `offset` of a device made of `unitSize`-byte units
 * (pages, blocks), each reported with `flagsOf(unit)`: merged, clipped, capped as
 * {@link ExtentList} does (a walk that stops early with reqOne).
 */
export function unitExtents(
  offset: number,
  length: number,
  unitSize: number,
  flagsOf: (unit: number) => number,
  opts: ExtentListOptions = {},
): DeviceExtent[] {
  const list = new ExtentList(offset, length, opts);
  while (list.wanted) {
    const unit = Math.floor(list.next / unitSize);
    list.push((unit + 1) * unitSize - list.next, flagsOf(unit));
  }
  return list.extents;
}
