// @nbd/server: serve any Device over the NBD protocol.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export type { ServerTlsOptions, TlsIdentity } from '@nbd/node';
export type { BlockSizes } from '@nbd/protocol';
export type {
  Device,
  DeviceExtent,
  DeviceRecipe,
  Export,
  ExtentsOptions,
  IoOptions,
  Loan,
  MaybePromise,
  ZeroOptions,
} from './device.js';
export { ExtentList, type ExtentListOptions, eachUnit, unitExtents } from './extents.js';
export { listen, listenAndServe, NbdServer } from './listener.js';
export { type Logger, silentLogger } from './logger.js';
export { MEMORY_PAGE_SIZE, MemoryDevice } from './memory-device.js';
export type { OpenContext } from './negotiation.js';
export { PageDevice, PageStore, PageTable } from './page-store.js';
export { serve, serveTransmission, type TransmissionOptions, transmissionFlagsOf } from './serve.js';
export type { ConnectionInfo, ServeOptions } from './serve-options.js';
export { SharedMemoryDevice } from './shared-memory-device.js';
