// Where qcow2 metadata lives in memory: the L1 and refcount tables whole (each is
// bounded by qemu's limits, 32 and 8 MiB, and checked against the file at open), and
// L2 tables and refcount blocks in bounded caches of whole clusters (qemu's
// l2-cache-size and refcount-cache-size). Tables change only under the metadata
// lock (metadata.ts), which a flush also holds: no copy is needed to write them.
import type { HostIo } from './host-io.js';

/** A cached cluster-sized table. */
export interface Table {
  /** Where it lives in the file. */
  readonly offset: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Changed since it was last written. */
  dirty: boolean;
}

/** Bytes written at once when part of a whole-in-memory table changed. */
const SECTOR = 512;

/** A table held whole in memory (L1, refcount table); changed sectors are written back. */
export class WholeTable {
  readonly view: DataView;
  private readonly dirtySectors = new Set<number>();

  constructor(
    public bytes: Uint8Array,
    public offset: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Entries (8 bytes each). */
  get entries(): number {
    return this.bytes.length / 8;
  }

  get dirty(): boolean {
    return this.dirtySectors.size > 0;
  }

  /** Marks entry `index` for writing back. */
  touch(index: number): void {
    this.dirtySectors.add(Math.floor((index * 8) / SECTOR));
  }

  /** Writes the changed sectors (runs of them in one write each). */
  async writeBack(io: HostIo): Promise<void> {
    const sectors = [...this.dirtySectors].sort((a, b) => a - b);
    this.dirtySectors.clear();
    for (let i = 0; i < sectors.length; ) {
      let j = i + 1;
      while (j < sectors.length && sectors[j] === sectors[j - 1]! + 1) j++;
      const start = sectors[i]! * SECTOR;
      const end = Math.min((sectors[j - 1]! + 1) * SECTOR, this.bytes.length);
      await io.write(this.bytes.subarray(start, end), this.offset + start);
      i = j;
    }
  }
}

/** A bounded cache of cluster-sized tables, least recently used first out; dirty ones stay until written. */
export class TableCache {
  private readonly tables = new Map<number, Table>();
  private readonly loading = new Map<number, Promise<Table>>();
  private dirtyCount = 0;

  constructor(
    private readonly io: HostIo,
    private readonly clusterSize: number,
    /** Tables kept (at least 2). */
    readonly capacity: number,
  ) {}

  /** The table at `offset` if cached (and marks it recently used). */
  get(offset: number): Table | undefined {
    const t = this.tables.get(offset);
    if (t !== undefined) {
      this.tables.delete(offset);
      this.tables.set(offset, t);
    }
    return t;
  }

  /** The table at `offset`, read from the file on a miss (concurrent misses share one read). */
  load(offset: number): Table | Promise<Table> {
    const hit = this.get(offset);
    if (hit !== undefined) return hit;
    let p = this.loading.get(offset);
    if (p === undefined) {
      p = this.read(offset);
      this.loading.set(offset, p);
      const done = () => this.loading.delete(offset);
      p.then(done, done);
    }
    return p;
  }

  /** A new all-zero table at `offset`, dirty (it replaces anything cached there). */
  fresh(offset: number): Table {
    const bytes = new Uint8Array(this.clusterSize);
    const old = this.tables.get(offset);
    if (old?.dirty) this.dirtyCount--;
    this.tables.delete(offset);
    const t: Table = { offset, bytes, view: new DataView(bytes.buffer), dirty: false };
    this.insert(t);
    this.markDirty(t);
    return t;
  }

  /** A table already written to the file, now cached clean. */
  adopt(offset: number, bytes: Uint8Array): Table {
    this.drop(offset);
    const t: Table = { offset, bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), dirty: false };
    this.insert(t);
    return t;
  }

  markDirty(t: Table): void {
    if (t.dirty) return;
    t.dirty = true;
    this.dirtyCount++;
  }

  /** More dirty tables than the cache should hold: time to flush. */
  get overfull(): boolean {
    return this.dirtyCount > this.capacity;
  }

  get hasDirty(): boolean {
    return this.dirtyCount > 0;
  }

  /** Writes every dirty table (under the metadata lock). */
  async writeBack(): Promise<void> {
    for (const t of [...this.tables.values()]) {
      if (!t.dirty) continue;
      await this.io.write(t.bytes, t.offset);
      t.dirty = false;
      this.dirtyCount--;
    }
    this.evict();
  }

  /** Forgets the table at `offset` (its cluster was freed). */
  drop(offset: number): void {
    const t = this.tables.get(offset);
    if (t?.dirty) this.dirtyCount--;
    this.tables.delete(offset);
  }

  /**
   * Runs `f` on the table at `offset` in the tick in which it is found cached (loading it
   * first if needed): a table awaited may be evicted before the awaiting code runs again,
   * so whoever changes a table takes it and changes it with nothing awaited in between.
   */
  async use<T>(offset: number, f: (t: Table) => T): Promise<T> {
    for (;;) {
      const t = this.get(offset);
      if (t !== undefined) return f(t);
      await this.load(offset);
    }
  }

  private async read(offset: number): Promise<Table> {
    const bytes = new Uint8Array(this.clusterSize);
    await this.io.read(bytes, offset);
    // A fresh table or a write-back may have put it there while the read ran.
    const raced = this.tables.get(offset);
    if (raced !== undefined) return raced;
    const t: Table = { offset, bytes, view: new DataView(bytes.buffer), dirty: false };
    this.insert(t);
    return t;
  }

  private insert(t: Table): void {
    this.tables.set(t.offset, t);
    this.evict();
  }

  /** Drops clean tables, oldest first, until the cache is within capacity (dirty ones wait for a flush). */
  private evict(): void {
    if (this.tables.size <= this.capacity) return;
    for (const [offset, t] of this.tables) {
      if (this.tables.size <= this.capacity) return;
      if (!t.dirty) this.tables.delete(offset);
    }
  }
}
