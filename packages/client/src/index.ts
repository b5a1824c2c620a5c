// @nbd/client: negotiate with `Client`, then talk to the export through a `Connection`
// (or several, as a `MultiConnection`). Errors are @nbd/protocol's NbdError family.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export type { ClientTlsOptions, TlsIdentity } from '@nbd/node';
export { Client, type ClientState } from './client.js';
export { type ConnectOptions, DEFAULT_HANDSHAKE_TIMEOUT, type GoOptions } from './client-options.js';
export type { LentBytes } from './commands.js';
export { Connection, type ConnectionState } from './connection.js';
export {
  type BlockStatusOptions,
  EXPORT_HANDLE,
  type ExportHandle,
  isExportHandle,
  type Signal,
  type WriteOptions,
  type ZeroOptions,
} from './export-handle.js';
export type { BlockSizes, ExportInfo } from './export-info.js';
export { type ConnectMultiOptions, connectMulti, MultiConnection, type OpenOptions, open } from './multi.js';
export { DEFAULT_OPTION_REPLY_LIMITS, type ExportListing, type HandshakeStyle, type OptionReplyLimits } from './option-engine.js';
export type { Extent } from './reply-state.js';
export type { ConnectTarget } from './target.js';
