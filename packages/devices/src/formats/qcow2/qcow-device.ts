// A qcow2 image as a Device, over any Device holding the image file (a FileDevice,
// an HTTP or S3 export, a block device). Reads map guest ranges through the L1/L2
// tables (metadata.ts, cluster-map.ts) to data in the file, zeroes, compressed
// clusters or the backing file; writes, zeroes and trims are writer.ts. Block status
// tells data here from zeroes and from what the backing file holds; allocation depth
// (qemu:allocation-depth) says which layer of the chain holds each range.
import { realpath } from 'node:fs/promises';
import type { BlockSizes } from '@nbd/protocol';
import { NbdInvalidArgumentError, throwIfAborted } from '@nbd/protocol';
import type { Device, DeviceExtent, ExtentsOptions, IoOptions, ZeroOptions } from '@nbd/server';
import { FileDevice } from '../../file/file-device.js';
import { type BackingOption, DEFAULT_MAX_BACKING_DEPTH, followBacking } from './backing.js';
import { mapRange, type Piece, PieceKind } from './cluster-map.js';
import { decompressCluster, hasZstd } from './compressed.js';
import { unsupported } from './errors.js';
import { HostIo } from './host-io.js';
import { type CacheSizes, Metadata } from './metadata.js';
import { detectPreallocation, merged } from './preallocation.js';
import { QcowWriter } from './writer.js';

/** Options of {@link QcowDevice.open}. */
export interface QcowOptions extends CacheSizes {
  /** Serve read-only (default: writable when the file is). */
  readOnly?: boolean;
  /**
   * The backing file, if the image names one: `'follow'` opens the chain by name, `'none'`
   * serves this layer alone, or give the device (or a function opening it; either way it
   * is the caller's to close). Without it an image that has a backing file is refused, so
   * that an untrusted image never makes us open another file.
   */
  backing?: BackingOption;
  /** The image's path: names it in errors and resolves relative backing file names. */
  path?: string;
  /** The file may grow past the device's size (default: true for a regular file). */
  grow?: boolean;
  /** Deepest backing chain `'follow'` opens (default 32). */
  maxBackingDepth?: number;
  /** Close `file` when the qcow2 device closes. */
  closeFile?: boolean;
  signal?: AbortSignal;
  /** Internal: real paths of the images above this one (loop detection). */
  chain?: string[];
}

/** What `qemu-img info` tells about a qcow2 image (its format-specific part included). */
export interface QcowInfo {
  virtualSize: number;
  clusterSize: number;
  /** '0.10' (version 2) or '1.1' (version 3). */
  compat: '0.10' | '1.1';
  compressionType: 'zlib' | 'zstd';
  lazyRefcounts: boolean;
  refcountBits: number;
  extendedL2: boolean;
  /** The dirty bit (lazy refcounts not yet repaired). */
  dirty: boolean;
  corrupt: boolean;
  snapshots: number;
  bitmaps: boolean;
  backingFile: string | undefined;
  backingFormat: string | undefined;
  /** Bytes in the image file. */
  fileLength: number;
}

/** The longest request a client should send (qemu-nbd's limit). */
const MAX_REQUEST = 32 * 1024 * 1024;
/** Extents answered per call at most (the client asks again for the rest). */
const MAX_EXTENT_PIECES = 4096;
/** Decompressed clusters kept for reads that walk through one cluster in small steps. */
const COMPRESSED_CACHE = 8;
/** One extent of {@link QcowDevice.allocationDepth}: 0 unallocated, 1 this image, 2 its backing file, … */
export interface DepthExtent {
  length: number;
  depth: number;
}

/** A qcow2 image (versions 2 and 3) served as a block device. */
export class QcowDevice implements Device {
  readonly size: number;
  readonly readOnly: boolean;
  /** One metadata cache behind every connection: a flush on one covers all. */
  readonly multiConn = true;
  readonly blockSizes: BlockSizes;
  readonly writeAt?: NonNullable<Device['writeAt']>;
  readonly trim?: NonNullable<Device['trim']>;
  readonly zero?: NonNullable<Device['zero']>;
  readonly sync?: NonNullable<Device['sync']>;
  /** The cluster size in bytes. */
  readonly clusterSize: number;
  /** qcow2 version: 2 (compat=0.10) or 3 (compat=1.1). */
  readonly version: number;
  /** The backing file name recorded in the image, if any. */
  readonly backingName: string | undefined;

  private readonly compressedCache = new Map<number, Promise<Uint8Array>>();
  private preallocated: Promise<boolean> | undefined;

  private constructor(
    readonly meta: Metadata,
    readonly io: HostIo,
    /** The backing file in use (undefined: none, or not followed). */
    readonly backing: Device | undefined,
    writable: boolean,
    private readonly opts: QcowOptions,
    /** Aborts metadata and backing I/O when the device closes (never a client's disconnect). */
    private readonly closer: AbortController,
  ) {
    const g = meta.g;
    this.size = g.header.size;
    this.clusterSize = g.clusterSize;
    this.version = g.header.version;
    this.backingName = g.backingName;
    this.readOnly = !writable;
    this.blockSizes = { min: 1, preferred: Math.min(Math.max(g.clusterSize, 4096), 2 * 1024 * 1024), max: MAX_REQUEST };
    meta.onFreed = () => this.compressedCache.clear();
    if (!writable) return;
    const writer = new QcowWriter(this);
    this.writeAt = (buf, offset) => writer.write(buf, offset);
    this.zero = (offset, length, o: ZeroOptions) => writer.zero(offset, length, o);
    this.trim = (offset, length) => writer.trim(offset, length);
    this.sync = () => meta.flush();
  }

  /** Opens the qcow2 image held by `file`. */
  static async open(file: Device, opts: QcowOptions = {}): Promise<QcowDevice> {
    const name = opts.path ?? 'image';
    throwIfAborted(opts.signal, 'QcowDevice.open');
    const closer = new AbortController();
    const growable = opts.grow ?? (file instanceof FileDevice && file.kind === 'file');
    const io = new HostIo(file, growable, closer.signal);
    const meta = await Metadata.open(io, name, opts);
    const g = meta.g;
    if (g.compression === 'zstd' && !hasZstd)
      throw unsupported(name, `zstd compression needs Node.js ≥ 22.15 (this is ${process.version})`);
    const wantWrite = opts.readOnly !== true;
    if (wantWrite && !io.writable && opts.readOnly === false) throw new NbdInvalidArgumentError(`qcow2 ${name}: the file is read-only`);
    const writable = wantWrite && io.writable;
    if (writable && g.readOnlyReasons.length > 0)
      throw unsupported(name, `cannot be opened for writing: ${g.readOnlyReasons.join('; ')} (open it read-only)`);
    const backing = await openBackingOf(meta, opts);
    try {
      if (writable) await meta.clearUnknownAutoclear();
      throwIfAborted(opts.signal, 'QcowDevice.open');
      return new QcowDevice(meta, io, backing, writable, opts, closer);
    } catch (e) {
      if (opts.backing === 'follow') await backing?.close?.();
      throw e;
    }
  }

  /** The image's header, as `qemu-img info` reports it. */
  info(): QcowInfo {
    const g = this.meta.g;
    const h = g.header;
    return {
      virtualSize: h.size,
      clusterSize: g.clusterSize,
      compat: h.version >= 3 ? '1.1' : '0.10',
      compressionType: g.compression,
      lazyRefcounts: (h.compatible & 1n) !== 0n,
      refcountBits: 2 ** g.refcountOrder,
      extendedL2: g.extendedL2,
      dirty: (h.incompatible & 1n) !== 0n,
      corrupt: (h.incompatible & 2n) !== 0n,
      snapshots: h.nbSnapshots,
      bitmaps: (h.autoclear & 1n) !== 0n,
      backingFile: g.backingName,
      backingFormat: g.backingFormat,
      fileLength: this.io.length,
    };
  }

  readAt(buf: Uint8Array, offset: number, _opts?: IoOptions): Promise<void> {
    return this.readGuest(buf, offset);
  }

  /**
   * Base:allocation: data (here or in the backing file), or zero holes. As qemu, when the
   * image looks preallocated (far more clusters referenced than the file really holds),
   * data clusters over holes of the file are reported as zeroes.
   */
  async extents(offset: number, length: number, opts: ExtentsOptions): Promise<DeviceExtent[]> {
    // REQ_ONE still maps a bounded stretch: runs of different pieces with the same flags make one extent.
    const pieces = await mapRange(this.meta, offset, length, MAX_EXTENT_PIECES);
    const probe = await this.metadataPreallocated();
    const out: DeviceExtent[] = [];
    for (const p of pieces) {
      if (p.kind === PieceKind.DATA && probe) await this.hostExtents(p, opts, out);
      else if (p.kind === PieceKind.DATA || p.kind === PieceKind.COMPRESSED) out.push({ length: p.length, flags: 0 });
      else if (p.kind === PieceKind.ZERO || this.backing === undefined) out.push({ length: p.length, flags: 3 });
      else if (!(await this.backingExtents(p, opts, out))) break;
    }
    return opts.reqOne ? merged(out).slice(0, 1) : out;
  }

  /**
   * Which layer holds each byte, as qemu's `qemu:allocation-depth` meta context: 0 for
   * bytes no image allocates, 1 for this image (data, zeroes, compressed), 2 for its
   * backing file, and so on down the chain. Past the end of a shorter backing file the
   * zeroes count as that file's (qemu: "as if they were allocated at this layer").
   */
  async allocationDepth(offset: number, length: number): Promise<DepthExtent[]> {
    const pieces = await mapRange(this.meta, offset, length, MAX_EXTENT_PIECES);
    const out: DepthExtent[] = [];
    const push = (n: number, depth: number) => {
      const last = out[out.length - 1];
      if (last?.depth === depth) last.length += n;
      else out.push({ length: n, depth });
    };
    for (const p of pieces) {
      if (p.kind !== PieceKind.BACKING) push(p.length, 1);
      else if (this.backing === undefined) push(p.length, 0);
      else {
        const inBacking = Math.max(0, Math.min(p.length, (this.backing.size ?? 0) - p.offset));
        if (inBacking > 0) {
          if (this.backing instanceof QcowDevice) {
            let covered = 0;
            for (const d of await this.backing.allocationDepth(p.offset, inBacking)) {
              push(d.length, d.depth === 0 ? 0 : d.depth + 1);
              covered += d.length;
            }
            if (covered < inBacking) return out;
          } else push(inBacking, 2);
        }
        if (inBacking < p.length) push(p.length - inBacking, 2);
      }
    }
    return out;
  }

  async close(): Promise<void> {
    try {
      // The second flush writes the refcounts that the first one's frees lowered.
      if (!this.readOnly) for (let i = 0; i < 2; i++) await this.meta.flush();
    } finally {
      this.closer.abort();
      if (this.opts.backing === 'follow') await this.backing?.close?.(); // a device given is the caller's to close
      if (this.opts.closeFile) await this.io.device.close?.();
    }
  }

  /** What the guest sees at `offset` (also the copy-on-write source of partial writes). */
  async readGuest(buf: Uint8Array, offset: number): Promise<void> {
    const pieces = await mapRange(this.meta, offset, buf.length);
    if (pieces.length === 1) return this.readPiece(buf, pieces[0]!);
    await Promise.all(pieces.map((p) => this.readPiece(buf.subarray(p.offset - offset, p.offset - offset + p.length), p)));
  }

  private readPiece(dst: Uint8Array, p: Piece): Promise<void> | undefined {
    switch (p.kind) {
      case PieceKind.DATA:
        return this.io.readData(dst, p.host);
      case PieceKind.ZERO:
        dst.fill(0);
        return undefined;
      case PieceKind.BACKING:
        return this.readBacking(dst, p.offset);
      default:
        return this.readCompressed(dst, p);
    }
  }

  private async readBacking(dst: Uint8Array, offset: number): Promise<void> {
    const inBacking = this.backing === undefined ? 0 : Math.max(0, Math.min(dst.length, (this.backing.size ?? 0) - offset));
    if (inBacking < dst.length) dst.fill(0, inBacking);
    if (inBacking > 0) await this.backing!.readAt(dst.subarray(0, inBacking), offset, { fua: false, signal: this.closer.signal });
  }

  private async readCompressed(dst: Uint8Array, p: Piece): Promise<void> {
    const ext = p.compressed!;
    let cluster = this.compressedCache.get(ext.offset);
    if (cluster === undefined) {
      cluster = this.inflate(ext.offset, ext.length);
      this.compressedCache.set(ext.offset, cluster);
      cluster.catch(() => this.compressedCache.delete(ext.offset));
      if (this.compressedCache.size > COMPRESSED_CACHE) this.compressedCache.delete(this.compressedCache.keys().next().value!);
    }
    const inCluster = p.offset % this.clusterSize;
    dst.set((await cluster).subarray(inCluster, inCluster + dst.length));
  }

  private async inflate(offset: number, length: number): Promise<Uint8Array> {
    const input = new Uint8Array(length);
    await this.io.readData(input, offset);
    const out = new Uint8Array(this.clusterSize);
    await decompressCluster(this.meta.g.compression, input, out, this.meta.name);
    return out;
  }

  /** True if the image references many more clusters than the file holds (qemu's qcow2_detect_metadata_preallocation). */
  private metadataPreallocated(): Promise<boolean> {
    this.preallocated ??= detectPreallocation(this, this.opts.path).catch(() => false);
    return this.preallocated;
  }

  /** Appends data piece `p`, split where the file below reads as zeroes (a hole in a preallocated image). */
  private async hostExtents(p: Piece, opts: ExtentsOptions, out: DeviceExtent[]): Promise<void> {
    const file = this.io.device;
    let covered = 0;
    if (file.extents !== undefined) {
      const inFile = Math.max(0, Math.min(p.length, this.io.length - p.host));
      for (const e of inFile > 0 ? await file.extents(p.host, inFile, opts) : []) {
        const n = Math.min(e.length, inFile - covered);
        if (n <= 0) break;
        out.push({ length: n, flags: e.flags & 2 });
        covered += n;
      }
      if (covered < inFile) {
        out.push({ length: inFile - covered, flags: 0 });
        covered = inFile;
      }
    }
    if (covered < p.length) out.push({ length: p.length - covered, flags: file.extents !== undefined ? 2 : 0 });
  }

  /** Appends the backing file's extents for piece `p`; false if they came back short (stop there). */
  private async backingExtents(p: Piece, opts: ExtentsOptions, out: DeviceExtent[]): Promise<boolean> {
    const backing = this.backing!;
    const inBacking = Math.max(0, Math.min(p.length, (backing.size ?? 0) - p.offset));
    if (inBacking > 0) {
      if (backing.extents === undefined) out.push({ length: inBacking, flags: 0 });
      else {
        let covered = 0;
        for (const e of await backing.extents(p.offset, inBacking, opts)) {
          const n = Math.min(e.length, inBacking - covered);
          if (n <= 0) break;
          out.push({ length: n, flags: e.flags });
          covered += n;
        }
        if (covered < inBacking) return false;
      }
    }
    if (inBacking < p.length) out.push({ length: p.length - inBacking, flags: 3 });
    return true;
  }
}

/** The backing device the options allow for this image (undefined when it has none or it is not followed). */
async function openBackingOf(meta: Metadata, opts: QcowOptions): Promise<Device | undefined> {
  const g = meta.g;
  const name = meta.name;
  if (g.backingName === undefined) return undefined;
  const backing = opts.backing;
  if (backing === undefined)
    throw new NbdInvalidArgumentError(
      `qcow2 ${name} has a backing file "${g.backingName}": allow it (backing: 'follow'), give it, or serve this layer alone (backing: 'none')`,
    );
  if (backing === 'none') return undefined;
  if (typeof backing === 'function') return backing(g.backingName, g.backingFormat);
  if (backing !== 'follow') return backing;
  const chain = opts.chain ?? (opts.path !== undefined ? [await realpath(opts.path)] : []);
  return followBacking(
    g.backingName,
    g.backingFormat,
    opts.path,
    name,
    chain,
    opts.maxBackingDepth ?? DEFAULT_MAX_BACKING_DEPTH,
    (file, path, below) =>
      QcowDevice.open(file, {
        readOnly: true,
        backing: 'follow',
        path,
        chain: below,
        closeFile: true,
        maxBackingDepth: opts.maxBackingDepth,
        l2CacheSize: opts.l2CacheSize,
        refcountCacheSize: opts.refcountCacheSize,
      }),
  );
}

/** Options of {@link openQcow2}. */
export interface OpenQcow2Options extends Omit<QcowOptions, 'path' | 'closeFile' | 'chain'> {
  /** Open the file with O_DIRECT. */
  direct?: boolean;
}

/** Opens the qcow2 image at `path` (its FileDevice is closed with it). */
export async function openQcow2(path: string, opts: OpenQcow2Options = {}): Promise<QcowDevice> {
  const file = await FileDevice.open(path, { readOnly: opts.readOnly === true, direct: opts.direct, signal: opts.signal });
  try {
    return await QcowDevice.open(file, { ...opts, path, closeFile: true });
  } catch (e) {
    await file.close();
    throw e;
  }
}
