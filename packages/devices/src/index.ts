// @nbd/devices: devices for @nbd/server — files and block devices, nbdkit-like
// sources, and filters that wrap one device in another.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export { FileDevice, type FileDeviceOptions, type FileKind } from './file/file-device.js';
export { type BlocksizeOptions, blocksize } from './filters/blocksize.js';
export { type CachedDevice, type CacheOptions, cache } from './filters/cache.js';
export { type CowOptions, cow } from './filters/cow.js';
export { CowFileOverlay, type CowFileOverlayOptions } from './filters/cow-file-overlay.js';
export { type DelayOptions, delay } from './filters/delay.js';
export { type ErrnoLike, type ErrorRule, type InjectErrorsOptions, injectErrors } from './filters/inject-errors.js';
/** The device calls filters see: read, write, flush, trim, zero, cache, extents. */
export type { Command } from './filters/intercept.js';
export { FilterError } from './filters/layer.js';
export { type LogEntry, type LogOptions, log } from './filters/log.js';
export { type OffsetOptions, offset } from './filters/offset.js';
export { type PartitionOptions, partition, partitionsOf } from './filters/partition.js';
/** A partition of an MBR or GPT table (number, start, length, type). */
export type { Partition } from './filters/partition-table.js';
export { type RateLimitOptions, rateLimit } from './filters/rate-limit.js';
export { readOnly } from './filters/read-only.js';
export { type ReadaheadOptions, readahead } from './filters/readahead.js';
export { isTransient, type RetryOptions, retry } from './filters/retry.js';
export { type Filter, stack } from './filters/stack.js';
export { type CommandStats, type StatsDevice, type StatsOptions, type StatsSnapshot, stats } from './filters/stats.js';
export { type TruncateOptions, truncate } from './filters/truncate.js';
export { type ImageFormat, type OpenedImage, type OpenImageOptions, openImage, probeFormat } from './formats/open-image.js';
export type { BackingOption } from './formats/qcow2/backing.js';
export {
  type DepthExtent,
  type OpenQcow2Options,
  openQcow2,
  QcowDevice,
  type QcowInfo,
  type QcowOptions,
} from './formats/qcow2/qcow-device.js';
export { SPARSE_PAGE_SIZE, SparseMemoryDevice, type SparseMemoryOptions } from './memory/sparse-memory-device.js';
export { DeviceOptionError } from './option-error.js';
export { HttpDevice } from './remote/http-device.js';
export type { HttpDeviceOptions } from './remote/http-options.js';
export { DataDevice, type DataDeviceOptions, type DataSpec } from './sources/data-device.js';
export { NullDevice, ZeroDevice } from './sources/null-device.js';
export { PatternDevice } from './sources/pattern-device.js';
export { RandomDevice, type RandomOptions } from './sources/random-device.js';
export { SPARSE_RANDOM_BLOCK, SparseRandomDevice, type SparseRandomOptions } from './sources/sparse-random-device.js';
