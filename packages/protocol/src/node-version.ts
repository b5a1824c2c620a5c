// The packages need Node.js 22 (Promise.withResolvers, Set methods, …). Each package's
// index calls requireSupportedNode() first, so an older Node gets one clear error when
// the package loads instead of a TypeError deep inside a call. Elsewhere (a browser,
// where `process` may not exist; Bun and Deno, which carry their own versions) it does nothing.
import { ErrorCode, NbdError } from './errors.js';

/** The oldest Node.js major version the packages run on (their `engines.node`). */
export const NODE_MAJOR_NEEDED = 22;

/** Node.js is older than {@link NODE_MAJOR_NEEDED}: thrown when a package loads. */
export class NbdNodeVersionError extends NbdError {
  /** `'NbdNodeVersionError'`, as shown in stack traces. */
  override name = 'NbdNodeVersionError';
  /** The running Node.js version, as `process.versions.node` gives it (`'20.19.2'`). */
  readonly running: string;
  constructor(running: string) {
    super(ErrorCode.NODE_VERSION, `@nbd needs Node.js ${NODE_MAJOR_NEEDED} or newer (this is v${running})`);
    this.running = running;
  }
}

interface ProcessLike {
  versions?: { node?: unknown; bun?: unknown; deno?: unknown };
}

/**
 * Throws {@link NbdNodeVersionError} on a Node.js older than {@link NODE_MAJOR_NEEDED};
 * does nothing outside Node.js. `proc` stands in for `process` (tests).
 */
export function requireSupportedNode(proc: ProcessLike | undefined = (globalThis as { process?: ProcessLike }).process): void {
  const versions = proc?.versions;
  if (typeof versions?.node !== 'string' || versions.bun !== undefined || versions.deno !== undefined) return;
  if (Number.parseInt(versions.node, 10) < NODE_MAJOR_NEEDED) throw new NbdNodeVersionError(versions.node);
}
