// A sparse in-memory device: fixed-size pages allocated on first write, dropped
// by trim/zero (their memory is reused, not returned), reported as holes by
// `extents`, lent to the server for zero-copy READ replies. Synchronous, so the
// server replies in the same tick (the fast path the benchmark measures).
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { PageDevice, PageTable } from './page-store.js';

/** Page size: as nbdkit's sparse array, small enough that sparse images stay sparse. */
export const MEMORY_PAGE_SIZE = 32 * 1024;
/** Pages per slab: pages live in 4 MiB slabs, so the GC tracks a few large buffers, not one per page. */
const SLAB_PAGES = 128;

/**
 * MemoryDevice's pages: slots in 4 MiB slabs, a dropped page's slot reused for the
 * next new page. Dropped slots wait in quarantine while memory lent before the drop
 * may still be unsent, so a reply never carries another offset's data.
 */
class SlabPages extends PageTable {
  /** Slots of dropped pages, reused before new slabs are allocated. */
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  /**
   * `gen` counts drops made while loans are out; a slot dropped in generation g is
   * free once no loan of generation ≤ g is out.
   */
  private quarantine: { slot: number; gen: number }[] = [];
  private quarantineHead = 0;
  private gen = 0;
  /** Generation → loans still out. */
  private readonly loans = new Map<number, number>();

  constructor(size: number) {
    super(size, MEMORY_PAGE_SIZE, SLAB_PAGES);
  }

  protected takeSlot(): number {
    if (this.freeSlots.length === 0 && this.quarantineHead < this.quarantine.length) this.unquarantine();
    const reused = this.freeSlots.pop();
    if (reused !== undefined) {
      const at = (reused % SLAB_PAGES) * MEMORY_PAGE_SIZE;
      this.slabs[Math.floor(reused / SLAB_PAGES)]!.fill(0, at, at + MEMORY_PAGE_SIZE);
      return reused;
    }
    const slot = this.nextSlot++;
    if (Math.floor(slot / SLAB_PAGES) >= this.slabs.length) this.slabs.push(new Uint8Array(SLAB_PAGES * MEMORY_PAGE_SIZE));
    return slot;
  }

  protected dropSlot(slot: number): void {
    if (this.loans.size === 0) this.freeSlots.push(slot);
    else {
      this.quarantine.push({ slot, gen: this.gen });
      // Loans made from now on cannot show this slot.
      this.gen++;
    }
  }

  protected override loan(): () => void {
    const gen = this.gen;
    this.loans.set(gen, (this.loans.get(gen) ?? 0) + 1);
    let out = true;
    return () => {
      if (!out) return;
      out = false;
      const left = this.loans.get(gen)! - 1;
      if (left === 0) this.loans.delete(gen);
      else this.loans.set(gen, left);
    };
  }

  /** Frees quarantined slots that no outstanding loan can still show. */
  private unquarantine(): void {
    let oldest = Infinity;
    for (const g of this.loans.keys()) oldest = Math.min(oldest, g);
    const q = this.quarantine;
    while (this.quarantineHead < q.length && q[this.quarantineHead]!.gen < oldest) this.freeSlots.push(q[this.quarantineHead++]!.slot);
    if (this.quarantineHead === q.length) {
      this.quarantine = [];
      this.quarantineHead = 0;
    }
  }
}

/**
 * A sparse in-memory `Device` of a fixed size in bytes: 32 KiB pages allocated on first write and
 * dropped by trim/zero, holes reported by `extents`, zero-copy READ by `lend`, native FUA, multi-conn.
 */
export class MemoryDevice extends PageDevice {
  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) throw new NbdInvalidArgumentError(`MemoryDevice: bad size ${size}`);
    super(new SlabPages(size));
  }
}
