// @nbd/copy: our nbdcopy, an application of @nbd/client.
export { type CopyOptions, type CopyProgress, type CopyResult, copy } from './copy.js';
export type { CopyEndpoint } from './endpoints.js';
