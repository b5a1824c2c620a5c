// A regular file's allocation map from SEEK_DATA and SEEK_HOLE, asked for every
// large READ (the server sends holes as OFFSET_HOLE chunks) and every BLOCK_STATUS.
// SEEK_HOLE can be slow: tmpfs walks a data run page by page (14 ms for 1 GiB), so it
// runs on the thread pool, one at a time, and the data runs it finds are remembered.
// Only data is remembered, never holes: a stale "data" is harmless (the client reads
// zeroes), a stale "hole" would hide written bytes. Our own trim and zero forget
// what they touch; writes can only turn holes into data.
import { ZERO_HOLE } from '@nbd/protocol';
import { type DeviceExtent, ExtentList, type ExtentsOptions, type MaybePromise } from '@nbd/server';
import { SEEK_DATA, SEEK_HOLE, seek, seekAsync } from './linux-io.js';

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
    const list = new ExtentList(offset, length, opts);
    return this.walk(list) ? list.extents : this.finish(list);
  }

  /** Adds extents while no SEEK_HOLE is needed; false when one is (at `list.next`). */
  private walk(list: ExtentList): boolean {
    while (list.wanted) {
      const at = list.next;
      const known = this.runs.find((r) => r.start <= at && at < r.end);
      if (known !== undefined) {
        list.add(at, known.end - at, 0);
        continue;
      }
      // SEEK_DATA skips holes quickly (an index lookup), so it stays synchronous.
      const data = seek(this.fd, at, SEEK_DATA) ?? Number.MAX_SAFE_INTEGER;
      if (data === at) return false;
      list.add(at, data - at, ZERO_HOLE);
    }
    return true;
  }

  private async finish(list: ExtentList): Promise<DeviceExtent[]> {
    do {
      const at = list.next;
      list.add(at, (await this.dataEnd(at)) - at, 0);
    } while (!this.walk(list));
    return list.extents;
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
