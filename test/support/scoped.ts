// Peers and temp dirs that live for one test: afterEach stops and removes them,
// last first. Call once at the top of a test file.
import { afterEach } from 'vitest';
import { type Peer, startNbdkit, tempDir } from './peers.js';

export function scoped(prefix: string) {
  let cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups = [];
  });
  return {
    /** Runs `c` after the current test. */
    defer: (c: () => Promise<void> | void) => void cleanups.push(c),
    nbdkit: async (args: string[]): Promise<Peer> => {
      const p = await startNbdkit(args);
      cleanups.push(() => p.stop());
      return p;
    },
    tmp: (): string => {
      const t = tempDir(prefix);
      cleanups.push(t.cleanup);
      return t.dir;
    },
  };
}
