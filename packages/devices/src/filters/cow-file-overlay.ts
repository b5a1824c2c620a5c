// A copy-on-write overlay kept in files, so it outlives the process: the written
// blocks in a sparse data file, and which blocks are written (one state byte per
// block) in a map file beside it. A flush makes both durable in that order (the
// map never names a block whose data could still be lost), so after a crash or
// SIGKILL, reopening the same path gives back everything flushed.
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { isSharedArrayBuffer } from 'node:util/types';
import { isPowerOfTwo, NbdInvalidArgumentError, throwIfAborted } from '@nbd/protocol';
import type { Device, DeviceRecipe } from '@nbd/server';
import { FileDevice } from '../file/file-device.js';
import { BlockLocks } from './block-locks.js';

/** Map file: `NBDCOW01` | u32 block size | u32 0 | u64 device size | … | states from byte 64. */
const MAGIC = 'NBDCOW01';
const HEADER = 64;
/** States are persisted in pages of this many blocks; a dirty bit per page. */
const MAP_PAGE = 4096;

/** Options of {@link CowFileOverlay.open}. */
export interface CowFileOverlayOptions {
  /** The size of the device the overlay covers. */
  size: number;
  /** The cow block size (a power of two ≥ 4096, default 64 KiB); must match an existing overlay's. */
  blockSize?: number;
  /** Start empty even if the files exist (default: resume what they hold). */
  fresh?: boolean;
  /** Aborts the open. */
  signal?: AbortSignal;
  /** Internal (worker threads): the states and dirty bits of the overlay already open in another thread. */
  shared?: { states: SharedArrayBuffer; dirty: SharedArrayBuffer; lock: SharedArrayBuffer };
}

/** What the overlay's share() hands a worker thread. */
interface OverlayArgs {
  path: string;
  size: number;
  blockSize: number;
  shared: { states: SharedArrayBuffer; dirty: SharedArrayBuffer; lock: SharedArrayBuffer };
}

/** A cow overlay in files that survives the process: pass it as `cow(base, { overlay })`. */
export class CowFileOverlay {
  /** One state per block (0 below, 1 in the overlay, 2 zero), shared with the cow filter. */
  readonly states: Uint8Array;
  /** The data file, as a device (the cow filter reads and writes it). */
  readonly device: Device;
  readonly blockSize: number;
  private readonly dirty: Int32Array;
  private readonly persistLock: BlockLocks;

  private constructor(
    private readonly path: string,
    private readonly data: FileDevice,
    private readonly map: FileHandle,
    readonly size: number,
    blockSize: number,
    private readonly shared: OverlayArgs['shared'],
  ) {
    this.device = data;
    this.blockSize = blockSize;
    this.states = new Uint8Array(shared.states);
    this.dirty = new Int32Array(shared.dirty);
    this.persistLock = new BlockLocks(shared.lock);
  }

  /** Opens (or creates) `path` and `path.map`; resumes their state unless `fresh`. */
  static async open(path: string, opts: CowFileOverlayOptions): Promise<CowFileOverlay> {
    const blockSize = opts.blockSize ?? 64 * 1024;
    if (!isPowerOfTwo(blockSize) || blockSize < 4096)
      throw new NbdInvalidArgumentError(`CowFileOverlay: block size ${blockSize} is not a power of two ≥ 4096`);
    if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new NbdInvalidArgumentError(`CowFileOverlay: bad size ${opts.size}`);
    throwIfAborted(opts.signal, 'CowFileOverlay.open');
    const blocks = Math.ceil(opts.size / blockSize);
    const flags = constants.O_RDWR | constants.O_CREAT | (opts.fresh ? constants.O_TRUNC : 0);
    const dataFile = await open(path, flags, 0o600);
    await dataFile.close();
    const map = await open(`${path}.map`, flags, 0o600);
    try {
      const shared = opts.shared ?? {
        states: new SharedArrayBuffer(blocks),
        dirty: new SharedArrayBuffer(Math.ceil(blocks / MAP_PAGE / 32) * 4 || 4),
        lock: new SharedArrayBuffer(4),
      };
      if (!isSharedArrayBuffer(shared.states) || shared.states.byteLength !== blocks)
        throw new NbdInvalidArgumentError('CowFileOverlay: shared states do not fit');
      if (opts.shared === undefined) await loadMap(map, new Uint8Array(shared.states), opts.size, blockSize);
      const data = await FileDevice.open(path, { size: opts.size, signal: opts.signal });
      return new CowFileOverlay(path, data, map, opts.size, blockSize, shared);
    } catch (e) {
      await map.close();
      throw e;
    }
  }

  /** Notes that block `b`'s state changed: the next persist() writes its page of the map. */
  changed(b: number): void {
    const page = Math.floor(b / MAP_PAGE);
    Atomics.or(this.dirty, page >>> 5, 1 << (page & 31));
  }

  /**
   * Makes every state change so far durable: the data file is synced before the map
   * pages (snapshotted first) are written, so a state never outruns its data.
   * Persists run one at a time across threads, so a flush never returns while
   * another thread's persist still holds the pages it took.
   */
  async persist(): Promise<void> {
    const unlock = await this.persistLock.lock([0]);
    const taken: number[] = [];
    try {
      for (let w = 0; w < this.dirty.length; w++) {
        const bits = Atomics.exchange(this.dirty, w, 0);
        for (let i = 0; i < 32; i++) if ((bits & (1 << i)) !== 0) taken.push(w * 32 + i);
      }
      const snapshots = taken.map((p) => this.states.slice(p * MAP_PAGE, (p + 1) * MAP_PAGE));
      await this.data.sync();
      for (let i = 0; i < taken.length; i++) await this.map.write(snapshots[i]!, 0, snapshots[i]!.length, HEADER + taken[i]! * MAP_PAGE);
      if (taken.length > 0) await this.map.datasync();
    } catch (e) {
      for (const p of taken) Atomics.or(this.dirty, p >>> 5, 1 << (p & 31));
      throw e;
    } finally {
      unlock();
    }
  }

  /** How a worker thread opens the same overlay (same files, same shared states). */
  share(): DeviceRecipe {
    const args: OverlayArgs = { path: this.path, size: this.size, blockSize: this.blockSize, shared: this.shared };
    return { module: import.meta.url, args };
  }

  async close(): Promise<void> {
    try {
      await this.data.close();
    } finally {
      await this.map.close();
    }
  }
}

/** The worker-thread side of {@link CowFileOverlay.share}. */
export function openDevice(args: unknown): Promise<CowFileOverlay> {
  const a = args as OverlayArgs;
  return CowFileOverlay.open(a.path, { size: a.size, blockSize: a.blockSize, shared: a.shared });
}

/** Reads the map file into `states` (a new file gets its header); refuses a map made for another size or block size. */
async function loadMap(map: FileHandle, states: Uint8Array, size: number, blockSize: number): Promise<void> {
  const st = await map.stat();
  const header = new Uint8Array(HEADER);
  const dv = new DataView(header.buffer);
  if (st.size === 0) {
    header.set(new TextEncoder().encode(MAGIC));
    dv.setUint32(8, blockSize, true);
    dv.setBigUint64(16, BigInt(size), true);
    await map.write(header, 0, HEADER, 0);
    await map.truncate(HEADER + states.length);
    await map.datasync();
    return;
  }
  await map.read(header, 0, HEADER, 0);
  if (new TextDecoder().decode(header.subarray(0, 8)) !== MAGIC)
    throw new NbdInvalidArgumentError('CowFileOverlay: the map file is not a cow map');
  const hadBlock = dv.getUint32(8, true);
  const hadSize = Number(dv.getBigUint64(16, true));
  if (hadBlock !== blockSize || hadSize !== size) {
    throw new NbdInvalidArgumentError(
      `CowFileOverlay: the map was made for size ${hadSize} and block size ${hadBlock}, not ${size} and ${blockSize}`,
    );
  }
  const { bytesRead } = await map.read(states, 0, states.length, HEADER);
  states.fill(0, bytesRead);
  for (let i = 0; i < states.length; i++)
    if (states[i]! > 2) throw new NbdInvalidArgumentError(`CowFileOverlay: bad state ${states[i]} for block ${i}`);
}
