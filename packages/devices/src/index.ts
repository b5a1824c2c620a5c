// @nbd/devices: devices for @nbd/server — files and block devices, nbdkit-like
// sources, and filters that wrap one device in another.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads
requireSupportedNode(); // one clear error as the package loads, not a TypeError later
export { FileDevice, type FileDeviceOptions, type FileKind } from './file/file-device.js';
export { SPARSE_PAGE_SIZE, SparseMemoryDevice, type SparseMemoryOptions } from './memory/sparse-memory-device.js';
export { NullDevice, ZeroDevice } from './sources/null-device.js';
export { PatternDevice } from './sources/pattern-device.js';
export { RandomDevice, type RandomOptions } from './sources/random-device.js';
export { SPARSE_RANDOM_BLOCK, SparseRandomDevice, type SparseRandomOptions } from './sources/sparse-random-device.js';
export { DataDevice, type DataDeviceOptions, type DataSpec } from './sources/data-device.js';
export { type Filter, stack } from './filters/stack.js';
export { type OffsetOptions, offset } from './filters/offset.js';
export { type TruncateOptions, truncate } from './filters/truncate.js';
export { readOnly } from './filters/read-only.js';
export { type PartitionOptions, partition, partitionsOf } from './filters/partition.js';
/** A partition of an MBR or GPT table (number, start, length, type). */
export type { Partition } from './filters/partition-table.js';
export { type CowOptions, cow } from './filters/cow.js';
export { CowFileOverlay, type CowFileOverlayOptions } from './filters/cow-file-overlay.js';
export { type CacheOptions, type CachedDevice, cache } from './filters/cache.js';
export { type ReadaheadOptions, readahead } from './filters/readahead.js';
export { type BlocksizeOptions, blocksize } from './filters/blocksize.js';
export { type LogEntry, type LogOptions, log } from './filters/log.js';
export { type CommandStats, type StatsDevice, type StatsOptions, type StatsSnapshot, stats } from './filters/stats.js';
export { type ErrnoLike, type ErrorRule, type InjectErrorsOptions, injectErrors } from './filters/inject-errors.js';
export { type DelayOptions, delay } from './filters/delay.js';
export { type RateLimitOptions, rateLimit } from './filters/rate-limit.js';
export { type RetryOptions, isTransient, retry } from './filters/retry.js';
/** The device calls filters see: read, write, flush, trim, zero, cache, extents. */
export type { Command } from './filters/intercept.js';
export {
  type DepthExtent,
  type OpenQcow2Options,
  QcowDevice,
  type QcowInfo,
  type QcowOptions,
  openQcow2,
} from './formats/qcow2/qcow-device.js';
export { type ImageFormat, type OpenImageOptions, type OpenedImage, openImage, probeFormat } from './formats/open-image.js';
export type { BackingOption } from './formats/qcow2/backing.js';
