// @nbd/linux: attach NBD connections or a local Device to the kernel's /dev/nbdN.
// koffi loads on first call, never on import (so importing works on any OS).
export {
  type ConfigureOptions,
  type ConnectionInput,
  type DetachableConnection,
  type RawConnection,
  type SuperviseOptions,
  type Supervisor,
  configure,
  disconnect,
  status,
  supervise,
} from './configure.js';
export { NbdLinuxError, errnoName } from './errors.js';
export { ffiLoaded } from './ffi.js';
export { NbdIoctl, deviceInUse, listDevices } from './ioctl.js';
export { type Loopback, type LoopbackOptions, loopback } from './loopback.js';
export {
  type Attr,
  type AttrSpec,
  ClientFlag,
  type DeviceStatus,
  NbdAttr,
  NbdCmd,
  NbdNetlink,
  decodeAttrs,
  decodeError,
  decodeGenl,
  decodeMessages,
  decodeStatus,
  encodeAttrs,
  encodeGenlRequest,
} from './netlink.js';
