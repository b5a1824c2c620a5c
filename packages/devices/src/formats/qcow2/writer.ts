// Writing a qcow2 image. A write to clusters this image already owns (COPIED, and with
// extended L2 every subcluster it touches allocated) goes straight to the file; any
// other write takes the guest clusters' locks, allocates (under the metadata lock),
// writes the new data with the untouched rest of the cluster (or subcluster) copied
// from what the guest saw before (the backing file, zeroes, a compressed cluster),
// and only then points the L2 entry at it: a crash in between leaks a cluster, never
// exposes a stale one. Zeroes and trims only rewrite L2 entries (zero clusters, or
// unallocated in version 2), as qemu's qcow2_subcluster_zeroize and
// qcow2_cluster_discard do, and free what the entries stopped using.
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { ZeroOptions } from '@nbd/server';
import { BlockLocks } from '../../filters/block-locks.js';
import { corrupt, hex } from './errors.js';
import {
  COMPRESSED_SECTOR,
  compressedExtent,
  isCompressed,
  isCopied,
  type L2Entry,
  normalEntry,
  readL2,
  SUBCLUSTERS,
  standardOffset,
  standardReserved,
  subclusterType,
  writeL2,
  zeroFlag,
} from './layout.js';
import type { QcowDevice } from './qcow-device.js';
import type { Table } from './tables.js';

/** Every subcluster's bit. */
const ALL = 0xffffffff;
/** Zeroes written for the unaligned ends of a zero request (never written into). */
const ZEROES = new Uint8Array(1024 * 1024);

/** Subcluster bits `first..last` (inclusive). */
const bits = (first: number, last: number): number => (2 ** (last + 1) - 2 ** first) >>> 0;

/** A planned write into one cluster, or into `count` whole fresh clusters. */
interface Plan {
  l2: number;
  host: number;
  /** Whole clusters allocated together (0: a single partial cluster). */
  count: number;
  /** The write's span in the (single) cluster, widened to subclusters or the whole cluster. */
  s0: number;
  s1: number;
  /** The host cluster is new (else the entry's own, reused). */
  fresh: boolean;
}

export class QcowWriter {
  private readonly locks = new BlockLocks();
  private readonly C: number;
  private readonly S: number;
  private readonly ext: boolean;
  private readonly entry: L2Entry = { hi: 0, lo: 0, alloc: 0, zero: 0 };

  constructor(private readonly d: QcowDevice) {
    this.C = d.meta.g.clusterSize;
    this.S = d.meta.g.subclusterSize;
    this.ext = d.meta.g.extendedL2;
  }

  private get meta() {
    return this.d.meta;
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    for (let pos = 0; pos < buf.length; ) {
      const n = await this.inPlace(buf, pos, offset + pos);
      pos += n > 0 ? n : await this.allocating(buf, pos, offset + pos);
    }
    await this.afterChange();
  }

  /** Zeroes: whole (sub)clusters become zero entries; unaligned ends are written (refused when `fast`). */
  async zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    const unit = this.ext ? this.S : this.C;
    const end = offset + length;
    const canMark = this.d.version >= 3 || this.d.backing === undefined;
    const a0 = Math.ceil(offset / unit) * unit;
    const a1 = end === this.d.size ? Math.ceil(end / unit) * unit : Math.floor(end / unit) * unit;
    const marked = canMark && a1 > a0;
    const writes: [number, number][] = marked
      ? [
          [offset, Math.min(a0, end)],
          [Math.max(a1, a0), end],
        ]
      : [[offset, end]];
    const toWrite = writes.filter(([s, e]) => e > s);
    if (opts.fast && toWrite.length > 0) throw new NbdErrnoError(Errno.ENOTSUP, 'fast zero: the range is not aligned to whole clusters');
    for (const [s, e] of toWrite) await this.writeZeroes(s, e);
    if (marked) await this.mark(a0, Math.min(a1, Math.ceil(this.d.size / unit) * unit), opts.noHole ? 'zero-keep' : 'zero');
    await this.afterChange();
  }

  /** Discards whole clusters (qemu ignores partial ones too): zero clusters in version 3, unallocated in version 2. */
  async trim(offset: number, length: number): Promise<void> {
    const C = this.C;
    const end = offset + length;
    const c0 = Math.ceil(offset / C) * C;
    const c1 = end === this.d.size ? Math.ceil(end / C) * C : Math.floor(end / C) * C;
    if (c1 > c0) await this.mark(c0, c1, 'trim');
    await this.afterChange();
  }

  // ------------------------------------------------------------ writes

  /** Writes in place as far as the clusters from `at` are this image's own; returns the bytes written (0: none). */
  private async inPlace(buf: Uint8Array, pos: number, at: number): Promise<number> {
    const m = this.meta;
    const l1i = Math.floor(at / m.g.l2Coverage);
    const off = m.l2Offset(l1i);
    if (off === 0) return 0;
    // The write is issued in the same tick as the lookup, so no trim can free these clusters in between.
    return m.l2.use(off, (t) => this.inPlaceIn(t, buf, pos, at));
  }

  private inPlaceIn(t: Table, buf: Uint8Array, pos: number, at: number): number | Promise<number> {
    const g = this.meta.g;
    const C = this.C;
    const end = Math.min(at + buf.length - pos, (Math.floor(at / g.l2Coverage) + 1) * g.l2Coverage);
    let start = -1;
    let n = 0;
    for (let p = at; p < end; ) {
      const cluster = Math.floor(p / C);
      const cStart = cluster * C;
      const w0 = p - cStart;
      const w1 = Math.min(C, end - cStart);
      const e = readL2(t.view, cluster % g.l2Entries, this.ext, this.entry);
      if (isCompressed(e) || !isCopied(e) || standardReserved(e, !this.ext)) break;
      const host = standardOffset(e);
      if (host === 0 || (!this.ext && zeroFlag(e))) break;
      if (this.ext) {
        const mask = bits(Math.floor(w0 / this.S), Math.ceil(w1 / this.S) - 1);
        if ((e.alloc & mask) >>> 0 !== mask) break;
      }
      if (start >= 0 && start + n !== host + w0) break;
      this.checkDataCluster(host, cStart);
      if (start < 0) start = host + w0;
      n += w1 - w0;
      p = cStart + w1;
    }
    if (n === 0) return 0;
    return this.d.io.writeData(buf.subarray(pos, pos + n), start).then(() => n);
  }

  /** Writes what the clusters at `at` cannot take in place: allocates, copies on write, then updates the L2 entry. */
  private async allocating(buf: Uint8Array, pos: number, at: number): Promise<number> {
    const g = this.meta.g;
    const C = this.C;
    const first = Math.floor(at / C);
    const tableEnd = (Math.floor(at / g.l2Coverage) + 1) * g.l2Coverage;
    const whole = at % C === 0 ? Math.floor(Math.min(buf.length - pos, tableEnd - at) / C) : 0;
    const clusters = Array.from({ length: Math.max(1, whole) }, (_, i) => first + i);
    const unlock = await this.locks.lock(clusters);
    try {
      const plan = await this.meta.lock.run(() => this.plan(at, buf.length - pos, whole));
      try {
        await this.writeData(buf, pos, at, plan);
      } catch (e) {
        if (plan.fresh) await this.meta.lock.run(() => this.meta.free(plan.host, Math.max(1, plan.count) * C));
        throw e;
      }
      await this.meta.lock.run(() => this.commit(at, plan));
      return plan.count > 0 ? plan.count * C : Math.min(C, (at % C) + buf.length - pos) - (at % C);
    } finally {
      unlock();
    }
  }

  /** Under both locks: which host cluster(s) the write goes to, allocated now if new. */
  private async plan(at: number, remaining: number, whole: number): Promise<Plan> {
    const m = this.meta;
    const C = this.C;
    const l1i = Math.floor(at / m.g.l2Coverage);
    const l2 = await m.ensureL2(l1i);
    const first = Math.floor(at / C);
    const { count, e } = await m.l2.use(l2, (t) => {
      let n = 0;
      while (n < whole && !this.usableHost(this.read(t, first + n), (first + n) * C)) n++;
      return { count: n, e: { ...this.read(t, first) } };
    });
    if (count > 0) {
      const run = await m.refcounts.allocate(count, 1); // as many contiguous clusters as there are, up to count
      return { l2, host: run.offset, count: run.count, s0: 0, s1: C, fresh: true };
    }
    const usable = this.usableHost(e, first * C);
    const w0 = at % C;
    const w1 = Math.min(C, w0 + remaining);
    const wholeCluster = !this.ext || isCompressed(e) || (standardOffset(e) !== 0 && !usable);
    const s0 = wholeCluster ? 0 : Math.floor(w0 / this.S) * this.S;
    const s1 = wholeCluster ? C : Math.ceil(w1 / this.S) * this.S;
    if (usable) return { l2, host: standardOffset(e), count: 0, s0, s1, fresh: false };
    return { l2, host: (await m.refcounts.allocate(1)).offset, count: 0, s0, s1, fresh: true };
  }

  /** Writes the planned span: the caller's bytes, with the rest of the (sub)clusters as the guest saw them. */
  private async writeData(buf: Uint8Array, pos: number, at: number, plan: Plan): Promise<void> {
    const C = this.C;
    if (plan.count > 0) {
      await this.d.io.writeData(buf.subarray(pos, pos + plan.count * C), plan.host);
      return;
    }
    const cStart = Math.floor(at / C) * C;
    const w0 = at - cStart;
    const w1 = Math.min(C, w0 + buf.length - pos);
    const payload = buf.subarray(pos, pos + (w1 - w0));
    if (plan.s0 === w0 && plan.s1 === w1) {
      await this.d.io.writeData(payload, plan.host + w0);
      return;
    }
    const data = new Uint8Array(plan.s1 - plan.s0);
    if (w0 > plan.s0) await this.d.readGuest(data.subarray(0, w0 - plan.s0), cStart + plan.s0);
    if (plan.s1 > w1) await this.d.readGuest(data.subarray(w1 - plan.s0), cStart + w1);
    data.set(payload, w0 - plan.s0);
    await this.d.io.writeData(data, plan.host + plan.s0);
  }

  /** Under both locks: points the L2 entries at the written data and frees what they used before. */
  private async commit(at: number, plan: Plan): Promise<void> {
    await this.meta.l2.use(plan.l2, (t) => this.commitIn(t, at, plan));
  }

  private commitIn(t: Table, at: number, plan: Plan): void {
    const C = this.C;
    const first = Math.floor(at / C);
    if (plan.count > 0) {
      for (let i = 0; i < plan.count; i++) {
        this.freeOld(this.read(t, first + i));
        this.put(t, first + i, normalEntry(plan.host + i * C, this.ext ? ALL : 0, 0));
      }
      return;
    }
    const old = { ...this.read(t, first) };
    const mask = this.ext ? bits(plan.s0 / this.S, plan.s1 / this.S - 1) : 0;
    if (plan.fresh) this.freeOld(old);
    const keep = plan.fresh && (isCompressed(old) || standardOffset(old) !== 0) ? 0 : old.alloc;
    this.put(t, first, normalEntry(plan.host, this.ext ? (keep | mask) >>> 0 : 0, this.ext ? (old.zero & ~mask) >>> 0 : 0));
  }

  // ------------------------------------------------------------ zeroes and trims

  /**
   * Rewrites the entries of `[a0, a1)` (aligned to subclusters, or clusters for trim):
   * 'zero' frees and marks zero, 'zero-keep' marks zero and keeps the host cluster
   * (NO_HOLE), 'trim' as qemu's discard.
   */
  private async mark(a0: number, a1: number, mode: 'zero' | 'zero-keep' | 'trim'): Promise<void> {
    const g = this.meta.g;
    const rewrite: [number, number][] = [];
    for (let start = a0; start < a1; ) {
      const l1i = Math.floor(start / g.l2Coverage);
      const end = Math.min(a1, (l1i + 1) * g.l2Coverage);
      const clusters: number[] = [];
      for (let c = Math.floor(start / this.C); c * this.C < end; c++) clusters.push(c);
      const unlock = await this.locks.lock(clusters);
      try {
        await this.meta.lock.run(() => this.markInTable(l1i, start, end, mode, rewrite));
      } finally {
        unlock();
      }
      start = end;
    }
    // Part of a compressed cluster cannot be marked: it is decompressed and rewritten with zeroes.
    for (const [s, e] of rewrite) await this.writeZeroes(s, e);
  }

  /** Writes zero bytes over `[start, end)`. */
  private async writeZeroes(start: number, end: number): Promise<void> {
    for (let at = start; at < end; at += ZEROES.length) await this.write(ZEROES.subarray(0, Math.min(ZEROES.length, end - at)), at);
  }

  private async markInTable(l1i: number, start: number, end: number, mode: 'zero' | 'zero-keep' | 'trim', rewrite: [number, number][]) {
    const m = this.meta;
    const v3 = this.d.version >= 3;
    const hasBacking = this.d.backing !== undefined;
    // Without a table and without a backing file the range already reads as zeroes.
    if (m.l2Offset(l1i) === 0 && !(hasBacking && v3)) return;
    const l2 = await m.ensureL2(l1i);
    await m.l2.use(l2, (t) => this.markEntries(t, start, end, mode, rewrite));
  }

  private markEntries(t: Table, start: number, end: number, mode: 'zero' | 'zero-keep' | 'trim', rewrite: [number, number][]): void {
    const C = this.C;
    const v3 = this.d.version >= 3;
    const hasBacking = this.d.backing !== undefined;
    for (let c = Math.floor(start / C); c * C < end; c++) {
      const old = { ...this.read(t, c) };
      const host = standardOffset(old);
      const compressed = isCompressed(old);
      const allocated = host !== 0 || compressed;
      const u0 = Math.floor((Math.max(start, c * C) - c * C) / this.S);
      const u1 = Math.ceil((Math.min(end, (c + 1) * C) - c * C) / this.S) - 1;
      const mask = this.ext ? bits(u0, u1) : ALL;
      let next: L2Entry;
      if (mode === 'trim' || !v3) {
        if (v3 && !hasBacking && !allocated) continue;
        next = !v3
          ? { hi: 0, lo: 0, alloc: 0, zero: 0 }
          : this.ext
            ? { hi: 0, lo: 0, alloc: 0, zero: ALL }
            : { hi: 0, lo: 1, alloc: 0, zero: 0 };
      } else if (!this.ext) {
        const unmap = mode === 'zero' || compressed || host === 0 || !isCopied(old);
        next = unmap ? { hi: 0, lo: 1, alloc: 0, zero: 0 } : { ...old, lo: (old.lo | 1) >>> 0 };
      } else if (compressed && mask !== ALL) {
        rewrite.push([c * C + u0 * this.S, c * C + (u1 + 1) * this.S]);
        continue;
      } else if (mask === ALL && (mode === 'zero' || compressed || host === 0 || !isCopied(old))) {
        next = { hi: 0, lo: 0, alloc: 0, zero: ALL };
      } else {
        next = { ...old, alloc: (old.alloc & ~mask) >>> 0, zero: (old.zero | mask) >>> 0 };
      }
      if (next.hi === old.hi && next.lo === old.lo && next.alloc === old.alloc && next.zero === old.zero) continue;
      if (standardOffset(next) === 0) this.freeOld(old);
      this.put(t, c, next);
    }
  }

  // ------------------------------------------------------------ helpers

  /** Entry of guest cluster `cluster` (in `t`), checked; into the shared scratch entry. */
  private read(t: Table, cluster: number): L2Entry {
    const g = this.meta.g;
    const e = readL2(t.view, cluster % g.l2Entries, this.ext, this.entry);
    const where = hex(cluster * this.C);
    if (!isCompressed(e)) {
      if (standardReserved(e, g.header.version >= 3 && !this.ext))
        throw corrupt(this.meta.name, `L2 entry for guest offset ${where} has reserved bits set`);
      for (let s = 0; s < (this.ext ? SUBCLUSTERS : 1); s++)
        if (subclusterType(e, s, this.ext) === undefined)
          throw corrupt(this.meta.name, `L2 entry for guest offset ${where} has an invalid subcluster bitmap`);
    }
    return e;
  }

  /** True if the entry's host cluster is this image's alone and may be written in place. */
  private usableHost(e: L2Entry, guest: number): boolean {
    if (isCompressed(e) || !isCopied(e)) return false;
    const host = standardOffset(e);
    if (host === 0) return false;
    this.checkDataCluster(host, guest);
    return true;
  }

  /** A data cluster must lie inside the file and clear of metadata before we write it. */
  private checkDataCluster(host: number, guest: number): void {
    const m = this.meta;
    if (host >= m.io.length) throw corrupt(m.name, `guest offset ${hex(guest)} maps to ${hex(host)}, past the end of the file`);
    const what = m.map.at(host / this.C);
    if (what !== undefined) throw corrupt(m.name, `guest offset ${hex(guest)} maps to ${hex(host)}, which holds ${what}`);
  }

  private put(t: Table, cluster: number, e: L2Entry): void {
    writeL2(t.view, cluster % this.meta.g.l2Entries, this.ext, e);
    this.meta.l2.markDirty(t);
  }

  /** Frees what an entry being replaced used (once the new entry is on disk). */
  private freeOld(e: L2Entry): void {
    if (isCompressed(e)) {
      const ext = compressedExtent(e, this.meta.g.clusterBits);
      const start = ext.offset - (ext.offset % COMPRESSED_SECTOR);
      this.meta.free(start, ext.offset + ext.length - start);
    } else if (standardOffset(e) !== 0) this.meta.free(standardOffset(e), this.C);
  }

  /** Writes metadata back when the caches hold too many changed tables. */
  private async afterChange(): Promise<void> {
    if (this.meta.overfull) await this.meta.flush();
  }
}
