// @nbd/cli: the `nbd` command (serve, info, copy, attach, detach, devices). Its
// binary is dist/bin.js; main() runs the same command line from code.
import { requireSupportedNode } from '@nbd/protocol'; // first, so that on Node.js < 22 nothing else loads

requireSupportedNode(); // one clear error as the package loads, not a TypeError later

export { ExitCode, UsageError } from './errors.js';
export { main, version } from './main.js';
export type { Io } from './output.js';
