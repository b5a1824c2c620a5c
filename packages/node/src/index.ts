// @nbd/node: the only code of the SDK that touches Node's sockets, descriptors and
// internals, and the one loader of libc (koffi). Client, server and linux talk to
// sockets through the Transport interface of @nbd/protocol, implemented here. The
// libc plumbing the sibling packages share is in './internal.ts' (@nbd/node/internal).
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export { connectSocket, listenOptionsOf, type NbdAddress, socketOptionsOf, toNbdUri } from './address.js';
export { fdOf, hasDescriptor, socketFromFd, socketPair, takeDescriptor } from './descriptors.js';
export { fastReadChannel } from './fast-read.js';
export { ffiLoaded } from './ffi.js';
export { NodeTransport, type NodeTransportOptions, peerOf } from './node-transport.js';
export { trimWhenQuiet } from './sweep.js';
export { errnoName, NbdSystemError } from './system-error.js';
export {
  type ClientTlsOptions,
  clientTls,
  type Pem,
  parsePskFile,
  type ServerTls,
  type ServerTlsOptions,
  serverTls,
  type TlsIdentity,
} from './tls.js';
