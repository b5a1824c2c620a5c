// @nbd/linux: attach NBD connections or a local Device to the kernel's /dev/nbdN.
// koffi loads on first call, never on import (so importing works on any OS).
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export { errnoName, ffiLoaded, NbdSystemError } from '@nbd/node';
export {
  type ConfigureOptions,
  type ConnectionInput,
  configure,
  type DetachableConnection,
  disconnect,
  type RawConnection,
  type SuperviseOptions,
  type Supervisor,
  status,
  supervise,
} from './configure.js';
export type { Family as NetlinkFamily } from './genl-socket.js';
export { deviceInUse, listDevices, NbdIoctl } from './ioctl.js';
export { type Loopback, type LoopbackOptions, loopback } from './loopback.js';
export { type DeviceStatus, NbdNetlink } from './netlink.js';
export { KernelClientFlag } from './netlink-codec.js';
