// @nbd/server: serve any Device over the NBD protocol.
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
export { MEMORY_PAGE_SIZE, MemoryDevice } from './memory-device.js';
export { SharedMemoryDevice } from './shared-memory-device.js';
export type { OpenContext } from './negotiation.js';
export { type Logger, silentLogger } from './logger.js';
export type { ConnectionInfo, ServeOptions } from './serve-options.js';
export { type TransmissionOptions, serve, serveTransmission, transmissionFlagsOf } from './serve.js';
export { NbdServer, listen, listenAndServe } from './listener.js';
export type { ServerTlsOptions, TlsIdentity } from '@nbd/node';
