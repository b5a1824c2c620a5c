// A regular file's allocation map from SEEK_DATA and SEEK_HOLE, asked for every
// large READ (the server sends holes as OFFSET_HOLE chunks) and every BLOCK_STATUS.
// SEEK_HOLE can be slow: tmpfs walks a data run page by page (14 ms for 1 GiB), so it
// runs on the thread pool, one at a time, and the data runs it finds are remembered.
// Only data is remembered, never holes: a stale "data" is harmless (the client reads
// zeroes), a stale "hole" would hide written bytes. Our own trim and zero forget
// what they touch; writes can only turn holes into data.
import type { DeviceExtent, ExtentsOptions, MaybePromise } from '@nbd/server';
import { SEEK_DATA, SEEK_HOLE, seek, seekAsync } from './linux-io.js';

const HOLE = 1 | 2; // AllocationState.HOLE | AllocationState.ZERO
/** Data runs remembered at most (most recent first). */
const KEEP = 32;

/** The allocation map of one open regular file. */
export class FileExtents {
  /** Known data runs [start, end), most recently found first. */
  private runs: { start: number; end: number }[] = [];
  /** The SEEK_HOLE running now, if any: later lookups wait for it, then look here first. */
  private seeking: Promise<unknown> | undefined;

  constructor(private readonly fd: number) {}

  /**
   * Extents from `offset`, covering `length` bytes (only the first with reqOne):
   * synchronously when what is remembered and SEEK_DATA answer it, else once the
   * SEEK_HOLEs it needs are done.
   */
  extents(offset: number, length: number, opts: ExtentsOptions): MaybePromise<DeviceExtent[]> {
    const out: DeviceExtent[] = [];
    const end = offset + length;
    const at = this.walk(out, offset, end, opts.reqOne);
    return at === undefined ? out : this.finish(out, at, end, opts.reqOne);
  }

  /** Adds extents while no SEEK_HOLE is needed; returns where one is, or undefined when done. */
  private walk(out: DeviceExtent[], at: number, end: number, reqOne: boolean): number | undefined {
    while (at < end && !(reqOne && out.length > 0)) {
      const known = this.runs.find((r) => r.start <= at && at < r.end);
      if (known !== undefined) {
        out.push({ length: Math.min(known.end, end) - at, flags: 0 });
        at = known.end;
        continue;
      }
      // SEEK_DATA skips holes quickly (an index lookup), so it stays synchronous.
      const data = seek(this.fd, at, SEEK_DATA) ?? end;
      if (data === at) return at;
      out.push({ length: Math.min(data, end) - at, flags: HOLE });
      at = data;
    }
    return undefined;
  }

  private async finish(out: DeviceExtent[], at: number | undefined, end: number, reqOne: boolean): Promise<DeviceExtent[]> {
    while (at !== undefined) {
      const holeAt = await this.dataEnd(at);
      out.push({ length: Math.min(holeAt, end) - at, flags: 0 });
      at = holeAt < end ? this.walk(out, holeAt, end, reqOne) : undefined;
    }
    return out;
  }

  /** Forgets what is known about [offset, offset + length) (it may hold holes now). */
  forget(offset: number, length: number): void {
    const end = offset + length;
    this.runs = this.runs.flatMap((r) => {
      if (r.end <= offset || r.start >= end) return [r];
      const keep = [];
      if (r.start < offset) keep.push({ start: r.start, end: offset });
      if (r.end > end) keep.push({ start: end, end: r.end });
      return keep;
    });
  }

  /** Where the data run at `at` ends: remembered, or one SEEK_HOLE at a time on the thread pool. */
  private async dataEnd(at: number): Promise<number> {
    for (;;) {
      const known = this.runs.find((r) => r.start <= at && at < r.end);
      if (known !== undefined) return known.end;
      if (this.seeking === undefined) break;
      await this.seeking.catch(() => {});
    }
    const p = seekAsync(this.fd, at, SEEK_HOLE);
    this.seeking = p;
    try {
      const hole = (await p) ?? at;
      if (hole > at) {
        this.runs.unshift({ start: at, end: hole });
        if (this.runs.length > KEEP) this.runs.pop();
      }
      return hole > at ? hole : at + 1;
    } finally {
      if (this.seeking === p) this.seeking = undefined;
    }
  }
}
