// @nbd/cli: the `nbd` command (serve, info, copy, attach, detach, devices). Its
// binary is dist/bin.js; main() runs the same command line from code.
export { ExitCode, UsageError } from './errors.js';
export { main, version } from './main.js';
export type { Io } from './output.js';
