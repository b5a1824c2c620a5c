// A server in its own process, so its resident memory can be measured alone.
// argv: socket path, export size. Prints "ready" once listening; "rss" on stdin prints VmRSS in KiB; "gc" runs the GC.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { listenAndServe, MemoryDevice } from '../../packages/server/dist/index.js';

const [path, size] = [process.argv[2], Number(process.argv[3] ?? 64 * 1024 * 1024)];
const ac = new AbortController();
const served = listenAndServe({ path }, [{ name: 'mem', size, device: new MemoryDevice(size) }], {
  signal: ac.signal,
  onListen: () => console.log('ready'),
});
const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'rss') console.log(`rss ${rssKiB()}`);
  else if (line === 'mem') {
    const m = process.memoryUsage();
    console.log(
      `mem heap ${(m.heapUsed / 2 ** 20).toFixed(1)}/${(m.heapTotal / 2 ** 20).toFixed(1)} external ${(m.external / 2 ** 20).toFixed(1)} arrayBuffers ${(m.arrayBuffers / 2 ** 20).toFixed(1)}`,
    );
  } else if (line === 'gc') {
    globalThis.gc?.();
    console.log('gc done');
  } else if (line === 'stop') {
    ac.abort();
    await served;
    process.exit(0);
  }
}
