// nbdkit's sparse-random plugin: runs of 4 KiB data blocks between runs of holes,
// shaped like a virtual machine's disk, the same for a seed. The map comes from one
// xoshiro256** stream over the blocks (a two-state chain: leave data with
// probability 1/runLength, leave a hole so that `percent` of blocks are data),
// exactly as nbdkit draws it, so both serve the same map and the same bytes.
import { isSharedArrayBuffer } from 'node:util/types';
import { Errno, NbdErrnoError, NbdInvalidArgumentError, ZERO_HOLE } from '@nbd/protocol';
import { type Device, type DeviceExtent, type DeviceRecipe, eachUnit, unitExtents } from '@nbd/server';
import { DeviceOptionError } from '../option-error.js';
import { checkSize } from './null-device.js';
import { Xoshiro256 } from './prng.js';
import { type RandomOptions, seedOf, verifyWrite } from './random-device.js';
import { sourceRecipe } from './source-recipe.js';

/** The block size of the map (nbdkit's). */
export const SPARSE_RANDOM_BLOCK = 4096;

/** Options of {@link SparseRandomDevice}. */
export interface SparseRandomOptions extends RandomOptions {
  /** Percentage of blocks holding data, 0..100 (default 10). */
  percent?: number;
  /** Average length of a data run in bytes (default 16 MiB). */
  runLength?: number;
  /** Every byte random, instead of one random non-zero byte repeated over each block (default false). */
  randomContent?: boolean;
  /** Internal (worker threads): the map already drawn, shared. */
  map?: SharedArrayBuffer;
}

/** Draws the data/hole map: bit b of byte b >> 3 set = block b holds data. */
function drawMap(map: Uint8Array, blocks: number, seed: number, percent: number, runLength: number): void {
  if (percent === 0) return;
  if (percent === 100) {
    map.fill(0xff);
    return;
  }
  const leaveData = 1 / (runLength / SPARSE_RANDOM_BLOCK);
  const leaveHole = ((percent / 100) * leaveData) / (1 - percent / 100);
  const rng = new Xoshiro256(seed);
  let data = false;
  for (let b = 0; b < blocks; b++) {
    if (data) map[b >>> 3]! |= 1 << (b & 7);
    // Compared as doubles, as the C code compares uint64_t with a double (UINT64_MAX as a double is 2^64).
    if (rng.nextDouble() <= (data ? leaveData : leaveHole) * 2 ** 64) data = !data;
  }
}

/** nbdkit's sparse-random plugin. */
export class SparseRandomDevice implements Device {
  readonly size: number;
  readonly seed: number;
  readonly multiConn = true;
  readonly percent: number;
  readonly runLength: number;
  readonly randomContent: boolean;
  private readonly mapBuffer: SharedArrayBuffer;
  private readonly map: Uint8Array;
  private readonly rng = new Xoshiro256();
  private readonly block = new Uint8Array(SPARSE_RANDOM_BLOCK);

  constructor(size: number, opts: SparseRandomOptions = {}) {
    this.size = checkSize(size, 'SparseRandomDevice');
    this.seed = seedOf(opts.seed, 'SparseRandomDevice');
    this.percent = opts.percent ?? 10;
    this.runLength = opts.runLength ?? 16 * 1024 * 1024;
    this.randomContent = opts.randomContent ?? false;
    const bad = (option: string, value: number, why: string) => new DeviceOptionError('SparseRandomDevice', why, { option, value });
    if (!(this.percent >= 0 && this.percent <= 100)) throw bad('percent', this.percent, 'is not within 0..100');
    if (!(this.runLength > 0)) throw bad('runLength', this.runLength, 'is not a length of 1 byte or more');
    const blocks = Math.ceil(size / SPARSE_RANDOM_BLOCK);
    const bytes = Math.ceil(blocks / 8);
    if (opts.map !== undefined) {
      if (!isSharedArrayBuffer(opts.map) || opts.map.byteLength !== bytes)
        throw new NbdInvalidArgumentError('SparseRandomDevice: the shared map does not fit this size');
      this.mapBuffer = opts.map;
      this.map = new Uint8Array(this.mapBuffer);
    } else {
      this.mapBuffer = new SharedArrayBuffer(bytes);
      this.map = new Uint8Array(this.mapBuffer);
      drawMap(this.map, blocks, this.seed, this.percent, this.runLength);
    }
  }

  /** Whether block `b` holds data. */
  isData(b: number): boolean {
    return (this.map[b >>> 3]! & (1 << (b & 7))) !== 0;
  }

  readAt(buf: Uint8Array, offset: number): void {
    this.eachBlock(offset, buf.length, (b, inBlock, n, pos) => {
      if (!this.isData(b)) buf.fill(0, pos, pos + n);
      else if (inBlock === 0 && n === SPARSE_RANDOM_BLOCK) this.fillBlock(b, buf.subarray(pos, pos + n));
      else {
        this.fillBlock(b, this.block);
        buf.set(this.block.subarray(inBlock, inBlock + n), pos);
      }
    });
  }

  /** Accepted only if `buf` is exactly what the device holds there (EIO otherwise). */
  writeAt(buf: Uint8Array, offset: number): void {
    verifyWrite(buf, offset, (b, at) => this.readAt(b, at));
  }

  /** Nothing is stored: flush has nothing to do (nbdcopy --flush needs it). */
  sync(): void {}

  /** Only holes may be trimmed (EIO elsewhere, as nbdkit). */
  trim(offset: number, length: number): void {
    this.holesOnly(offset, length);
  }

  /** Only holes may be zeroed (EIO elsewhere, as nbdkit). */
  zero(offset: number, length: number): void {
    this.holesOnly(offset, length);
  }

  cache(): void {}

  extents(offset: number, length: number, opts: { reqOne: boolean }): DeviceExtent[] {
    return unitExtents(offset, length, SPARSE_RANDOM_BLOCK, (b) => (this.isData(b) ? 0 : ZERO_HOLE), opts);
  }

  share(): DeviceRecipe {
    const { size, seed, percent, runLength, randomContent } = this;
    return sourceRecipe({ kind: 'sparse-random', size, seed, percent, runLength, randomContent, map: this.mapBuffer });
  }

  /** A data block's bytes: seeded with seed + the block's offset, as nbdkit. */
  private fillBlock(b: number, out: Uint8Array): void {
    this.rng.reseed(this.seed + b * SPARSE_RANDOM_BLOCK);
    if (this.randomContent) {
      for (let i = 0; i < out.length; i++) out[i] = this.rng.next() & 0xff;
    } else out.fill(this.rng.next() & 0xff || 1);
  }

  private holesOnly(offset: number, length: number): void {
    this.eachBlock(offset, length, (b) => {
      if (this.isData(b))
        throw new NbdErrnoError(Errno.EIO, `block at ${b * SPARSE_RANDOM_BLOCK} holds data: only holes can be trimmed or zeroed`);
    });
  }

  private eachBlock(offset: number, length: number, f: (block: number, inBlock: number, n: number, pos: number) => void): void {
    eachUnit(offset, length, SPARSE_RANDOM_BLOCK, f);
  }
}
