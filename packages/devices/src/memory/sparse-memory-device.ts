// A sparse in-memory device that gives memory back: each page is its own buffer,
// allocated on first write and dropped by trim and zero, so the garbage collector
// returns it (nbdkit's memory plugin with its sparse allocator). @nbd/server's
// MemoryDevice keeps dropped pages in slabs for reuse instead (its README gap 11).
//
// A dropped page is never reused for another offset, so memory lent to a READ
// reply stays valid however long the socket holds it: no quarantine needed.
import { NbdInvalidArgumentError, ZERO_HOLE, isAllZero } from '@nbd/protocol';
import { type Device, type DeviceExtent, type Loan, type ZeroOptions, eachUnit, unitExtents } from '@nbd/server';

export { isAllZero as isZero } from '@nbd/protocol'; // (callers move to isAllZero)

/** Default page size: as nbdkit's sparse array, so maps line up with nbdkit's memory and data plugins. */
export const SPARSE_PAGE_SIZE = 32 * 1024;
const noRelease = (): void => {};

/** Options of {@link SparseMemoryDevice}. */
export interface SparseMemoryOptions {
  /** Page size, a power of two from 4 KiB to 1 MiB (default 32 KiB). */
  pageSize?: number;
}

/** Sparse memory whose trimmed and zeroed pages are given back (nbdkit's memory plugin). */
export class SparseMemoryDevice implements Device {
  readonly size: number;
  readonly multiConn = true;
  /** Memory is as durable as it gets: FUA needs nothing more. */
  readonly fua = true;
  readonly pageSize: number;
  private readonly pages = new Map<number, Uint8Array>();
  /** What holes lend: one page of zeroes, never written. */
  private readonly zeroPage: Uint8Array;

  constructor(size: number, opts: SparseMemoryOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`SparseMemoryDevice: bad size ${size}`);
    const pageSize = opts.pageSize ?? SPARSE_PAGE_SIZE;
    if (!(pageSize >= 4096 && pageSize <= 1 << 20 && (pageSize & (pageSize - 1)) === 0)) {
      throw new NbdInvalidArgumentError(`SparseMemoryDevice: page size ${pageSize} is not a power of two from 4 KiB to 1 MiB`);
    }
    this.size = size;
    this.pageSize = pageSize;
    this.zeroPage = new Uint8Array(pageSize);
  }

  /** Bytes of memory held by pages. */
  get allocated(): number {
    return this.pages.size * this.pageSize;
  }

  readAt(buf: Uint8Array, offset: number): void {
    this.walk(offset, buf.length, (page, inPage, n, pos) => {
      const p = this.pages.get(page);
      if (p === undefined) buf.fill(0, pos, pos + n);
      else buf.set(p.subarray(inPage, inPage + n), pos);
    });
  }

  /** The pages themselves (zeroes for holes): READ replies go out without a copy. */
  lend(offset: number, length: number): Loan {
    const views: Uint8Array[] = [];
    this.walk(offset, length, (page, inPage, n) => {
      const p = this.pages.get(page) ?? this.zeroPage;
      views.push(p.subarray(inPage, inPage + n));
    });
    return { views, release: noRelease };
  }

  writeAt(buf: Uint8Array, offset: number): void {
    this.walk(offset, buf.length, (page, inPage, n, pos) => {
      let p = this.pages.get(page);
      if (p === undefined) {
        p = new Uint8Array(this.pageSize);
        this.pages.set(page, p);
      }
      p.set(buf.subarray(pos, pos + n), inPage);
    });
  }

  sync(): void {}

  cache(): void {}

  /** Whole pages are dropped; partial pages are zeroed, and dropped if nothing else is left in them. */
  trim(offset: number, length: number): void {
    this.clear(offset, length);
  }

  /** As trim, but with `noHole` the range stays (or becomes) allocated. Always fast. */
  zero(offset: number, length: number, opts?: Partial<ZeroOptions>): void {
    if (!opts?.noHole) {
      this.clear(offset, length);
      return;
    }
    this.walk(offset, length, (page, inPage, n) => {
      const p = this.pages.get(page);
      if (p === undefined) this.pages.set(page, new Uint8Array(this.pageSize));
      else p.fill(0, inPage, inPage + n);
    });
  }

  extents(offset: number, length: number, opts: { reqOne: boolean }): DeviceExtent[] {
    return unitExtents(offset, length, this.pageSize, (page) => (this.pages.has(page) ? 0 : ZERO_HOLE), opts);
  }

  /** Calls `f(page, offsetInPage, bytes, positionInRange)` for each page a range touches. */
  private walk(offset: number, length: number, f: (page: number, inPage: number, n: number, pos: number) => void): void {
    eachUnit(offset, length, this.pageSize, f);
  }

  private clear(offset: number, length: number): void {
    this.walk(offset, length, (page, inPage, n) => {
      const p = this.pages.get(page);
      if (p === undefined) return;
      if (n === this.pageSize) {
        this.pages.delete(page);
        return;
      }
      p.fill(0, inPage, inPage + n);
      if (isAllZero(p)) this.pages.delete(page);
    });
  }
}
