// Our server in a process of its own, for the hostile-client table and the load tests:
// the table checks after every case that this process lives, still serves, and how much
// memory it holds. argv: socket path, JSON of ServeOptions overrides, size of "mem" in MiB.
// Exports: "mem" (8 MiB unless told, writable), "ro" (read-only), "bare" (a device with readAt and writeAt only:
// no FLUSH, TRIM or block status). Prints "ready"; stdin: "rss" → "rss KiB", "gc", "stop".
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { MemoryDevice, listen } from '../../packages/server/dist/index.js';

const [path, json, memMiB] = process.argv.slice(2);
const MiB = 1024 * 1024;
const memSize = Number(memMiB ?? 8) * MiB;
const mem = new MemoryDevice(memSize);
mem.writeAt(new Uint8Array(64 * 1024).fill(0x5a), 0);
const plain = new MemoryDevice(MiB);
const bare = { size: MiB, readAt: (b, o) => plain.readAt(b, o), writeAt: (b, o) => plain.writeAt(b, o) };
const server = await listen(
  { path },
  [
    { name: 'mem', size: memSize, device: mem },
    { name: 'ro', size: MiB, device: new MemoryDevice(MiB), readOnly: true },
    { name: 'bare', size: MiB, device: bare },
  ],
  { handshakeTimeout: 1500, ...JSON.parse(json ?? '{}') },
);
console.log('ready');
const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'rss') console.log(`rss ${rssKiB()}`);
  else if (line === 'count') console.log(`count ${server.connectionCount}`);
  else if (line === 'gc') {
    globalThis.gc?.();
    console.log('gc done');
  } else if (line === 'stop') {
    await server.close();
    process.exit(0);
  }
}
