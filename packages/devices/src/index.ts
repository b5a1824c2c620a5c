// @nbd/devices: devices for @nbd/server — files and block devices, nbdkit-like
// sources, and filters that wrap one device in another.
export { FileDevice, type FileDeviceOptions, type FileKind } from './file/file-device.js';
