// A sparse in-memory device that gives memory back: each page is its own buffer,
// allocated on first write and dropped by trim and zero, so the garbage collector
// returns it (nbdkit's memory plugin with its sparse allocator). @nbd/server's
// MemoryDevice keeps dropped pages in slabs for reuse instead (its README gap 11).
//
// A dropped page is never reused for another offset, so memory lent to a READ
// reply stays valid however long the socket holds it: no quarantine needed.
import { isAllZero, isPowerOfTwo, NbdInvalidArgumentError } from '@nbd/protocol';
import { PageDevice, PageTable } from '@nbd/server';

/** Default page size: as nbdkit's sparse array, so maps line up with nbdkit's memory and data plugins. */
export const SPARSE_PAGE_SIZE = 32 * 1024;
/** What a dropped page's slot holds until it is taken again. */
const NO_PAGE = new Uint8Array(0);

/** Options of {@link SparseMemoryDevice}. */
export interface SparseMemoryOptions {
  /** Page size, a power of two from 4 KiB to 1 MiB (default 32 KiB). */
  pageSize?: number;
}

/** Pages that are buffers of their own (a slab of one page each): a dropped one is left to the garbage collector. */
class OwnPages extends PageTable {
  private readonly freeSlots: number[] = [];

  constructor(size: number, pageSize: number) {
    super(size, pageSize, 1);
  }

  protected takeSlot(): number {
    const slot = this.freeSlots.pop() ?? this.slabs.length;
    this.slabs[slot] = new Uint8Array(this.pageSize);
    return slot;
  }

  protected dropSlot(slot: number): void {
    this.slabs[slot] = NO_PAGE;
    this.freeSlots.push(slot);
  }

  /** A page that holds only zeroes once part of it is trimmed or zeroed is dropped too. */
  protected override zeroedPart(page: number): void {
    const slot = this.find(page);
    if (isAllZero(this.slabs[slot]!)) this.drop(page);
  }
}

/** Sparse memory whose trimmed and zeroed pages are given back (nbdkit's memory plugin). */
export class SparseMemoryDevice extends PageDevice {
  readonly pageSize: number;

  constructor(size: number, opts: SparseMemoryOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`SparseMemoryDevice: bad size ${size}`);
    const pageSize = opts.pageSize ?? SPARSE_PAGE_SIZE;
    if (!(isPowerOfTwo(pageSize) && pageSize >= 4096 && pageSize <= 1 << 20)) {
      throw new NbdInvalidArgumentError(`SparseMemoryDevice: page size ${pageSize} is not a power of two from 4 KiB to 1 MiB`);
    }
    super(new OwnPages(size, pageSize));
    this.pageSize = pageSize;
  }
}
