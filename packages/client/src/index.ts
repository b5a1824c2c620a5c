// @nbd/client: negotiate with `Client`, then talk to the export through a `Connection`.
export { Client, type ConnectOptions, type GoOptions, type HandshakeStyle, NbdStateError, NbdUnsupportedError } from './client.js';
export { Connection, type Extent, type Negotiated } from './connection.js';
export { type BlockSizes, type ExportInfo } from './export-info.js';
export { MultiConnection, connectMulti, open } from './multi.js';
export { type CopyEndpoint, type CopyOptions, type CopyProgress, type CopyResult, copy } from './copy.js';
