// @nbd/copy: our nbdcopy, an application of @nbd/client.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export { copy } from './copy.js';
export type { CopyEndpoint } from './endpoints.js';
export type { CopyOptions, CopyProgress, CopyResult } from './options.js';
