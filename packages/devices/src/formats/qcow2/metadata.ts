// The metadata of one open qcow2 image and the one order in which it reaches the
// file. Every change (an allocation, an L2 entry, a refcount) happens under `lock`,
// and a flush holds it too, writing:
//   1. refcount blocks (increments first: a crash may leak a cluster, never lose one),
//      then, after a sync, refcount table entries pointing to new blocks;
//   2. after a sync (data and refcounts durable), the L2 tables; after another sync,
//      the L1 entries pointing to new L2 tables; then a sync.
//   3. only then the clusters that the written tables stopped using are freed (their
//      refcounts drop and the file gets the space back), so no table on disk ever
//      points at a cluster that was handed out again.
// This is qemu's ordering without lazy refcounts: the image is never marked dirty,
// and `qemu-img check` finds at most leaked clusters after a crash.
import { corrupt, hex } from './errors.js';
import { checkNoOverlap, headerRanges, type ImageGeometry, readGeometry } from './header.js';
import type { HostIo } from './host-io.js';
import { HeaderField, l1Offset, l1Reserved, reftableOffset, reftableReserved, setL1 } from './layout.js';
import { MetadataMap } from './metadata-map.js';
import { Mutex } from './mutex.js';
import { Refcounts } from './refcounts.js';
import { type Table, TableCache, WholeTable } from './tables.js';

/** Cache sizes, in bytes (qemu's l2-cache-size and refcount-cache-size). */
export interface CacheSizes {
  l2CacheSize?: number;
  refcountCacheSize?: number;
}

/** qemu's default L2 cache on Linux: 32 MiB (never more than the image needs). */
export const DEFAULT_L2_CACHE = 32 * 1024 * 1024;
/** qemu's default refcount cache: a quarter of that. */
export const DEFAULT_REFCOUNT_CACHE = 8 * 1024 * 1024;

export class Metadata {
  readonly lock = new Mutex();
  readonly l1: WholeTable;
  readonly l2: TableCache;
  readonly refcounts: Refcounts;
  readonly map: MetadataMap;
  /** Host byte ranges no longer used by any table in memory, freed at the end of the next flush. */
  private pendingFrees: { offset: number; length: number }[] = [];
  /** Called when freed clusters may be handed out again (drops caches keyed by host offset). */
  onFreed: () => void = () => {};
  private readonly C: number;

  private constructor(
    readonly io: HostIo,
    readonly g: ImageGeometry,
    readonly name: string,
    l1: Uint8Array,
    reftable: Uint8Array,
    caches: CacheSizes,
  ) {
    const h = g.header;
    this.C = g.clusterSize;
    this.l1 = new WholeTable(l1, h.l1TableOffset);
    const tablesNeeded = Math.max(1, h.l1Size);
    const l2Tables = Math.max(2, Math.min(tablesNeeded, Math.floor((caches.l2CacheSize ?? DEFAULT_L2_CACHE) / this.C)));
    this.l2 = new TableCache(io, this.C, l2Tables);
    this.map = new MetadataMap(headerRanges(g), this.C, name, h.l1Size + reftable.length / 8);
    const refTables = Math.max(2, Math.floor((caches.refcountCacheSize ?? DEFAULT_REFCOUNT_CACHE) / this.C));
    this.refcounts = new Refcounts(
      io,
      g,
      new WholeTable(reftable, h.refcountTableOffset),
      refTables,
      name,
      (c) => this.map.at(c),
      (offset, length, what) => {
        if (what === 'refcount table') this.map.moveRange('the refcount table', offset, length);
        else this.map.add(offset / this.C, 'a refcount block');
      },
    );
  }

  /** Reads the header and the L1 and refcount tables of `name`, checking every entry against the file. */
  static async open(io: HostIo, name: string, caches: CacheSizes): Promise<Metadata> {
    const g = await readGeometry(io, name);
    checkNoOverlap(headerRanges(g), g.clusterSize, name);
    const h = g.header;
    const l1 = new Uint8Array(h.l1Size * 8);
    await io.read(l1, h.l1TableOffset);
    const reftable = new Uint8Array(h.refcountTableClusters * g.clusterSize);
    await io.read(reftable, h.refcountTableOffset);
    const m = new Metadata(io, g, name, l1, reftable, caches);
    m.checkTables();
    return m;
  }

  /** Flushes in the order above; also the client's FLUSH. */
  async flush(): Promise<void> {
    await this.lock.run(() => this.flushLocked());
  }

  /** {@link flush}, for a caller that holds the lock. */
  async flushLocked(): Promise<void> {
    await this.refcounts.writeBack();
    const frees = this.pendingFrees;
    this.pendingFrees = [];
    if (this.l2.hasDirty || this.l1.dirty) {
      await this.io.sync();
      await this.l2.writeBack();
      if (this.l1.dirty) {
        await this.io.sync();
        await this.l1.writeBack(this.io);
      }
    }
    await this.io.sync();
    if (frees.length > 0) await this.applyFrees(frees);
  }

  /** True when the caches hold more changed tables than they should: the caller flushes. */
  get overfull(): boolean {
    return this.l2.overfull || this.refcounts.blocks.overfull;
  }

  /** Frees a host range once the tables that stopped using it are on disk (under the lock). */
  free(offset: number, length: number): void {
    this.pendingFrees.push({ offset, length });
  }

  /** The L2 table offset for L1 index `i` (0: none). */
  l2Offset(i: number): number {
    return l1Offset(this.l1.view, i);
  }

  /** The L2 table for L1 index `i`, created if missing (under the lock; resolves once it is cached). */
  async ensureL2(i: number): Promise<number> {
    const existing = this.l2Offset(i);
    if (existing !== 0) return existing;
    const { offset } = await this.refcounts.allocate(1);
    this.map.add(offset / this.C, 'an L2 table');
    this.l2.fresh(offset);
    setL1(this.l1.view, i, offset);
    this.l1.touch(i);
    return offset;
  }

  /** The cached L2 table at `offset`, or undefined if it is not cached. */
  table(offset: number): Table | undefined {
    return this.l2.get(offset);
  }

  /** Clears autoclear bits we do not know before the first write, as the format asks. */
  async clearUnknownAutoclear(): Promise<void> {
    if (this.g.clearAutoclear === 0n) return;
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, this.g.header.autoclear & ~this.g.clearAutoclear);
    await this.io.write(field, HeaderField.AUTOCLEAR_FEATURES);
    await this.io.sync();
  }

  private async applyFrees(frees: { offset: number; length: number }[]): Promise<void> {
    await this.io.settled(); // a request that looked a cluster up before it was dropped may still be using it
    const zeroed: number[] = [];
    for (const f of frees) {
      const first = Math.floor(f.offset / this.C);
      const last = Math.floor((f.offset + f.length - 1) / this.C);
      for (let c = first; c <= last; c++) if ((await this.refcounts.add(c, -1)) === 0) zeroed.push(c);
    }
    zeroed.sort((a, b) => a - b);
    for (let i = 0; i < zeroed.length; ) {
      let j = i + 1;
      while (j < zeroed.length && zeroed[j] === zeroed[j - 1]! + 1) j++;
      await this.io.discard(zeroed[i]! * this.C, (j - i) * this.C);
      i = j;
    }
    this.onFreed();
  }

  /** Every L1 and refcount table entry: no reserved bit, aligned, inside the file, clear of other metadata. */
  private checkTables(): void {
    const C = this.C;
    const l2s: number[] = [];
    for (let i = 0; i < this.l1.entries; i++) {
      const off = l1Offset(this.l1.view, i);
      if (l1Reserved(this.l1.view, i)) throw corrupt(this.name, `L1 entry ${i} has reserved bits set`);
      if (off === 0) continue;
      if (off + C > this.io.length)
        throw corrupt(this.name, `L1 entry ${i}: the L2 table at ${hex(off)} lies beyond the end of the file (${this.io.length} bytes)`);
      l2s.push(off / C);
    }
    this.map.addAll(l2s, 'an L2 table');
    const blocks: number[] = [];
    const reftable = this.refcounts.table;
    for (let i = 0; i < reftable.entries; i++) {
      const off = reftableOffset(reftable.view, i);
      if (reftableReserved(reftable.view, i)) throw corrupt(this.name, `refcount table entry ${i} has reserved bits set`);
      if (off === 0) continue;
      if (!Number.isSafeInteger(off) || off + C > this.io.length)
        throw corrupt(this.name, `refcount table entry ${i}: the refcount block at ${hex(off)} lies beyond the end of the file`);
      blocks.push(off / C);
    }
    this.map.addAll(blocks, 'a refcount block');
    this.map.check();
  }
}
