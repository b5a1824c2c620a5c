// Which clusters of the file hold metadata: the header, the L1, refcount and snapshot
// tables (a few ranges) and every L2 table and refcount block (single clusters, kept
// sorted in a typed array: at most one per L1 or refcount table entry). A data write
// or a cluster allocation that would land on metadata is refused (qemu's
// qcow2_check_metadata_overlap), so a hostile image cannot make us overwrite its tables.
import { corrupt, hex } from './errors.js';
import type { FileRange } from './header.js';

const KINDS = ['an L2 table', 'a refcount block'] as const;
/** The kinds of single-cluster metadata. */
export type MetadataKind = (typeof KINDS)[number];

export class MetadataMap {
  private singles: Float64Array;
  /** Parallel to `singles`: an index into KINDS. */
  private kinds: Uint8Array;
  private count = 0;

  constructor(
    private ranges: FileRange[],
    private readonly clusterSize: number,
    private readonly name: string,
    capacity: number,
  ) {
    this.singles = new Float64Array(Math.max(16, capacity));
    this.kinds = new Uint8Array(this.singles.length);
  }

  /**
   * Adds single clusters found at open (unsorted), then checks them: none twice, none
   * inside a range. `what` names them in errors ("an L2 table").
   */
  addAll(clusters: number[], what: MetadataKind): void {
    for (const c of clusters) {
      this.grow();
      this.kinds[this.count] = KINDS.indexOf(what);
      this.singles[this.count++] = c;
    }
  }

  /** Sorts what addAll added and throws on a cluster used twice or inside a table. */
  check(): void {
    const order = [...Array(this.count).keys()].sort((a, b) => this.singles[a]! - this.singles[b]!);
    const singles = Float64Array.from(order, (i) => this.singles[i]!);
    const kinds = Uint8Array.from(order, (i) => this.kinds[i]!);
    this.singles.set(singles);
    this.kinds.set(kinds);
    for (let i = 0; i < this.count; i++) {
      const c = this.singles[i]!;
      if (i > 0 && c === this.singles[i - 1]) throw corrupt(this.name, `cluster ${hex(c * this.clusterSize)} is used twice as metadata`);
      const r = this.rangeAt(c);
      if (r !== undefined) throw corrupt(this.name, `${KINDS[this.kinds[i]!]} at ${hex(c * this.clusterSize)} overlaps ${r.what}`);
    }
  }

  /** What metadata cluster `cluster` holds, if any. */
  at(cluster: number): string | undefined {
    const r = this.rangeAt(cluster);
    if (r !== undefined) return r.what;
    const i = this.find(cluster);
    return i >= 0 ? KINDS[this.kinds[i]!] : undefined;
  }

  /** Records a new L2 table or refcount block. */
  add(cluster: number, what: MetadataKind): void {
    const i = this.find(cluster);
    if (i >= 0) return;
    this.grow();
    const at = -i - 1;
    this.singles.copyWithin(at + 1, at, this.count);
    this.kinds.copyWithin(at + 1, at, this.count);
    this.singles[at] = cluster;
    this.kinds[at] = KINDS.indexOf(what);
    this.count++;
  }

  /** Replaces the range named `what` (the refcount table moved). */
  moveRange(what: string, offset: number, length: number): void {
    this.ranges = this.ranges.filter((r) => r.what !== what);
    this.ranges.push({ what, offset, length });
  }

  private rangeAt(cluster: number): FileRange | undefined {
    const at = cluster * this.clusterSize;
    return this.ranges.find((r) => at + this.clusterSize > r.offset && at < r.offset + r.length);
  }

  /** Index of `cluster` in the sorted singles, or -(insertion point) - 1. */
  private find(cluster: number): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.singles[mid]!;
      if (v === cluster) return mid;
      if (v < cluster) lo = mid + 1;
      else hi = mid - 1;
    }
    return -lo - 1;
  }

  private grow(): void {
    if (this.count < this.singles.length) return;
    const bigger = new Float64Array(this.singles.length * 2);
    bigger.set(this.singles);
    this.singles = bigger;
    const kinds = new Uint8Array(bigger.length);
    kinds.set(this.kinds);
    this.kinds = kinds;
  }
}
