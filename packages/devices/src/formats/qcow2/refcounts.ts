// Refcounts: the refcount table (whole in memory) and refcount blocks (cached), the
// allocator that finds free clusters in them, and the growth of both as the file
// grows. Everything here runs under the metadata lock. The on-disk order that keeps
// a crash harmless: a refcount block is written before any table entry that points
// to it, and increments reach the file before the L2 entries that use the clusters
// (metadata.ts flushes in that order); a new refcount table is complete and synced
// before the header points to it.
import { Errno, NbdErrnoError } from '@nbd/protocol';
import { bytes, corrupt, hex } from './errors.js';
import type { ImageGeometry } from './header.js';
import type { HostIo } from './host-io.js';
import { getRefcount, HeaderField, MAX_REFTABLE_BYTES, maxRefcount, reftableOffset, setRefcount, setReftable, writeU64 } from './layout.js';
import { TableCache, WholeTable } from './tables.js';

/** Says what metadata, if any, a cluster holds (to refuse handing it out). */
export type MetadataProbe = (cluster: number) => string | undefined;

export class Refcounts {
  readonly blocks: TableCache;
  /** The lowest cluster that may be free. */
  private freeHint = 0;
  private readonly epb: number;
  private readonly order: number;
  private readonly clusterSize: number;

  constructor(
    private readonly io: HostIo,
    g: ImageGeometry,
    /** The refcount table, whole. */
    public table: WholeTable,
    cacheTables: number,
    private readonly name: string,
    private readonly metadataAt: MetadataProbe,
    /** A refcount block or table moved: the metadata map must know. */
    private readonly onMetadata: (offset: number, length: number, what: 'refcount block' | 'refcount table', old?: number) => void,
  ) {
    this.blocks = new TableCache(io, g.clusterSize, cacheTables);
    this.epb = g.refblockEntries;
    this.order = g.refcountOrder;
    this.clusterSize = g.clusterSize;
  }

  /** The refcount of `cluster` (0 past the table or in a block not yet allocated). */
  async get(cluster: number): Promise<number> {
    const ti = Math.floor(cluster / this.epb);
    if (ti >= this.table.entries) return 0;
    const off = reftableOffset(this.table.view, ti);
    if (off === 0) return 0;
    return this.blocks.use(off, (t) => getRefcount(t.view, cluster % this.epb, this.order));
  }

  /** Adds `delta` to the refcount of `cluster`; returns the new count. The block must exist for increments. */
  async add(cluster: number, delta: number): Promise<number> {
    const ti = Math.floor(cluster / this.epb);
    const off = ti < this.table.entries ? reftableOffset(this.table.view, ti) : 0;
    if (off === 0) {
      if (delta < 0) throw corrupt(this.name, `freeing cluster ${hex(cluster * this.clusterSize)}, whose refcount is already 0`);
      await this.ensureBlock(ti);
      return this.add(cluster, delta);
    }
    const now = await this.blocks.use(off, (t) => {
      const n = getRefcount(t.view, cluster % this.epb, this.order) + delta;
      if (n < 0) throw corrupt(this.name, `freeing cluster ${hex(cluster * this.clusterSize)}, whose refcount is already 0`);
      if (n > maxRefcount(this.order)) throw corrupt(this.name, `refcount of cluster ${hex(cluster * this.clusterSize)} would overflow`);
      setRefcount(t.view, cluster % this.epb, this.order, n);
      this.blocks.markDirty(t);
      return n;
    });
    if (now === 0 && cluster < this.freeHint) this.freeHint = cluster;
    return now;
  }

  /**
   * Finds free clusters, at least `min` and up to `n` of them contiguous (the first such
   * run from the lowest free cluster), sets their refcounts to 1 and returns the first
   * one's offset and how many there are.
   */
  async allocate(n: number, min = n): Promise<{ offset: number; count: number }> {
    let start = this.freeHint;
    let c = start;
    while (c < start + n) {
      const used = await this.used(c);
      if (used === 'changed') {
        c = start; // a refcount block or table was placed: look again
        continue;
      }
      if (!used) c++;
      else if (c - start >= min) break;
      else start = ++c;
    }
    const count = c - start;
    for (let i = start; i < c; i++) await this.add(i, 1);
    this.freeHint = c;
    return { offset: start * this.clusterSize, count };
  }

  /** Writes dirty refcount blocks, then (after a sync) table entries that point to new blocks. Returns true if it synced. */
  async writeBack(): Promise<boolean> {
    await this.blocks.writeBack();
    if (!this.table.dirty) return false;
    await this.io.sync();
    await this.table.writeBack(this.io);
    return true;
  }

  /** True if `cluster` is taken; 'changed' if a refcount block or table had to be created first. */
  private async used(cluster: number): Promise<boolean | 'changed'> {
    const ti = Math.floor(cluster / this.epb);
    if (ti >= this.table.entries || reftableOffset(this.table.view, ti) === 0) {
      await this.ensureBlock(ti);
      return 'changed';
    }
    if ((await this.get(cluster)) !== 0) return true;
    const what = this.metadataAt(cluster);
    if (what !== undefined) throw corrupt(this.name, `cluster ${hex(cluster * this.clusterSize)} holds ${what} but its refcount is 0`);
    return false;
  }

  /** Creates the refcount block for table index `ti`, in the first cluster it covers (all of which are free). */
  private async ensureBlock(ti: number): Promise<void> {
    if (ti >= this.table.entries) {
      await this.grow(ti + 1);
      if (reftableOffset(this.table.view, ti) !== 0) return;
    }
    const cluster = ti * this.epb;
    const what = this.metadataAt(cluster);
    if (what !== undefined) throw corrupt(this.name, `cluster ${hex(cluster * this.clusterSize)} holds ${what} but has no refcount block`);
    const offset = cluster * this.clusterSize;
    const block = new Uint8Array(this.clusterSize);
    setRefcount(new DataView(block.buffer), 0, this.order, 1);
    await this.io.write(block, offset);
    this.blocks.adopt(offset, block);
    setReftable(this.table.view, ti, offset);
    this.table.touch(ti);
    this.onMetadata(offset, this.clusterSize, 'refcount block');
  }

  /**
   * A larger refcount table, with the refcount blocks that describe it, past what the
   * old table covers: written and synced, then the header switched to it and synced,
   * then the old table's clusters freed.
   */
  private async grow(minEntries: number): Promise<void> {
    const C = this.clusterSize;
    const epb = this.epb;
    await this.blocks.writeBack(); // the new table copies pointers to blocks that must be on disk first
    // Past what the old table covers (no cluster there is in use), and past the end of a
    // file that can grow (bytes there, if any, are left alone); a fixed-size device is the
    // file, so its free space past the coverage is used.
    const at = Math.max(this.table.entries * epb, this.io.growable ? Math.ceil(this.io.length / C) : 0);
    let entries = Math.max(minEntries, this.table.entries * 2);
    let tableClusters = 0;
    let blockCount = 1;
    for (;;) {
      tableClusters = Math.ceil((entries * 8) / C);
      const span = () => Math.floor((at + blockCount + tableClusters - 1) / epb) - Math.floor(at / epb) + 1;
      while (span() > blockCount) blockCount = span();
      const lastIndex = Math.floor((at + blockCount + tableClusters - 1) / epb);
      if (lastIndex < entries) break;
      entries = lastIndex + 1;
    }
    if (tableClusters * C > MAX_REFTABLE_BYTES)
      throw new NbdErrnoError(Errno.ENOSPC, `qcow2 ${this.name}: the refcount table would grow past 8 MiB (${bytes(tableClusters * C)})`);
    const table = new Uint8Array(tableClusters * C);
    table.set(this.table.bytes);
    const tview = new DataView(table.buffer);
    const first = Math.floor(at / epb);
    const blocks: Uint8Array[] = [];
    for (let i = 0; i < blockCount; i++) {
      const block = new Uint8Array(C);
      const bview = new DataView(block.buffer);
      for (let c = Math.max(at, (first + i) * epb); c < Math.min(at + blockCount + tableClusters, (first + i + 1) * epb); c++)
        setRefcount(bview, c % epb, this.order, 1);
      setReftable(tview, first + i, (at + i) * C);
      blocks.push(block);
    }
    for (let i = 0; i < blockCount; i++) await this.io.write(blocks[i]!, (at + i) * C);
    const tableOffset = (at + blockCount) * C;
    await this.io.write(table, tableOffset);
    await this.io.sync();
    const fields = new Uint8Array(12); // refcount_table_offset (u64) | refcount_table_clusters (u32)
    const fview = new DataView(fields.buffer);
    writeU64(fview, 0, tableOffset);
    fview.setUint32(8, tableClusters);
    await this.io.write(fields, HeaderField.REFCOUNT_TABLE_OFFSET);
    await this.io.sync();
    const old = this.table;
    this.table = new WholeTable(table, tableOffset);
    for (let i = 0; i < blockCount; i++) {
      this.blocks.adopt((at + i) * C, blocks[i]!);
      this.onMetadata((at + i) * C, C, 'refcount block');
    }
    this.onMetadata(tableOffset, table.length, 'refcount table', old.offset);
    const oldFirst = old.offset / C;
    for (let c = oldFirst; c < oldFirst + Math.ceil(old.bytes.length / C); c++) await this.add(c, -1);
  }
}
