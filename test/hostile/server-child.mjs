// Our server in a process of its own, for the hostile-client table and the load tests:
// the table checks after every case that this process lives, still serves, and how much
// memory it holds. argv: socket path, JSON of ServeOptions overrides, size of "mem" in MiB.
// Exports: "mem" (8 MiB unless told, writable), "ro" (read-only), "bare" (a device with readAt and writeAt only:
// no FLUSH, TRIM or block status; not with threads), and with TLS on, "secret" (tlsOnly).
// With `threads`, the devices are SharedMemoryDevices. Hooks, given as data in the JSON's `hooks`:
// `preconnectRefuses: USER` (a PSK user refused once TLS is up, after `preconnectDelayMs`),
// `openRefuses: USER` (the open hook throws for that PSK user, else gives the export's device).
// Prints "ready"; stdin: "rss" → "rss KiB", "gc", "count", "preconnects" → JSON of every preconnect info, "stop".

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { listen, MemoryDevice, SharedMemoryDevice } from '../../packages/server/dist/index.js';

const [path, json, memMiB] = process.argv.slice(2);
const { hooks = {}, ...opts } = JSON.parse(json ?? '{}');
const MiB = 1024 * 1024;
const memSize = Number(memMiB ?? 8) * MiB;
const Device = opts.threads ? SharedMemoryDevice : MemoryDevice;
const mem = new Device(memSize);
mem.writeAt(new Uint8Array(64 * 1024).fill(0x5a), 0);
const exports = [
  { name: 'mem', size: memSize, device: mem },
  { name: 'ro', size: MiB, device: new Device(MiB), readOnly: true },
];
if (!opts.threads) {
  const plain = new MemoryDevice(MiB);
  exports.push({
    name: 'bare',
    size: MiB,
    device: { size: MiB, readAt: (b, o) => plain.readAt(b, o), writeAt: (b, o) => plain.writeAt(b, o) },
  });
}
if (opts.tls && opts.tls.mode !== 'off') exports.push({ name: 'secret', size: MiB, device: new Device(MiB), tlsOnly: true });
const preconnects = [];
if (hooks.preconnectRefuses !== undefined) {
  opts.preconnect = async (info) => {
    preconnects.push(info);
    if (info.tls && hooks.preconnectDelayMs) await new Promise((r) => setTimeout(r, hooks.preconnectDelayMs));
    return info.tls?.psk !== hooks.preconnectRefuses;
  };
}
if (hooks.openRefuses !== undefined) {
  opts.open = (ctx) => {
    if (ctx.tls?.psk === hooks.openRefuses) throw new Error(`${hooks.openRefuses} may not open "${ctx.export.name}"`);
    return ctx.export.device;
  };
}
const server = await listen({ path }, exports, { handshakeTimeout: 1500, ...opts });
console.log('ready');
const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'rss') console.log(`rss ${rssKiB()}`);
  else if (line === 'count') console.log(`count ${server.connectionCount}`);
  else if (line === 'preconnects') console.log(JSON.stringify(preconnects));
  else if (line === 'gc') {
    globalThis.gc?.();
    console.log('gc done');
  } else if (line === 'stop') {
    await server.close();
    process.exit(0);
  }
}
