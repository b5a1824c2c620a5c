// @nbd/node/internal: the plumbing the sibling packages share, not public API (it may
// change in any release): libc through the one koffi loader, and the undo of
// NodeTransport.detach's stopped reading. Users import '@nbd/node'.

export { resumeReading } from './fast-read.js';
export {
  check,
  closeFd,
  errno,
  ioctlInt,
  libc,
  libcFunction,
  openRdwr,
  pollReadable,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
} from './ffi.js';
