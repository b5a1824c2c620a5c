// @nbd/server: serve any Device over the NBD protocol.
export type { BlockSizes, Device, DeviceRecipe, Export, Extent, ExtentsOptions, IoOptions, Loan, MaybePromise, ZeroOptions } from './device.js';
export { MEMORY_PAGE_SIZE, MemoryDevice } from './memory-device.js';
export { SharedMemoryDevice } from './shared-memory-device.js';
export { FileDevice, type FileDeviceOptions } from './file-device.js';
export { type OpenContext, blockSizesOf, transmissionFlags } from './handshake.js';
export { type Logger, silentLogger } from './logger.js';
export { type ConnectionInfo, type ServeOptions, listenAndServe, listenOptionsOf, serve } from './serve.js';
export type { Session } from './session.js';
export { type Rejection, validateRequest } from './validate.js';
