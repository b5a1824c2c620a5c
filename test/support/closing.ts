// Devices a test file opens, closed after each test (or after all of them, for ones
// opened in beforeAll): Node 26 makes a FileHandle left to the garbage collector an
// uncaught error. Call at the top of the describe, before its other after-hooks, so
// they (stopping the servers) run first.
import { afterAll, afterEach } from 'vitest';

type Closable = { close(): Promise<void> };

export function closing(when: 'each' | 'all' = 'each') {
  const open: Closable[] = [];
  (when === 'each' ? afterEach : afterAll)(async () => {
    await Promise.allSettled(open.splice(0).map((d) => d.close()));
  });
  return <T extends Closable>(device: T): T => {
    open.push(device);
    return device;
  };
}
