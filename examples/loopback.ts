// Serves an in-memory disk as /dev/nbdN from this process until Ctrl-C.
//   node examples/dist/loopback.js [size-MiB] [--connections N] [--ioctl]
// Needs root (CAP_SYS_ADMIN) and the nbd module (modprobe nbd). Use the device
// from another process (mkfs, mount, dd): I/O to /dev/nbdN from THIS process must
// be async, because this event loop is what answers the kernel.
import { loopback } from '@nbd/linux';
import { MemoryDevice } from '@nbd/server';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args[i + 1];
};
const size = Number(args.find((a) => /^\d+$/.test(a)) ?? 64) * 1024 * 1024;
const connections = Number(flag('--connections') ?? 1);

const stop = new AbortController();
process.once('SIGINT', () => stop.abort());
process.once('SIGTERM', () => stop.abort());

const dev = new MemoryDevice(size);
const lb = await loopback(dev, size, { connections, signal: stop.signal, ...(args.includes('--ioctl') ? { mode: 'ioctl' as const } : {}) });
console.log(`${lb.path}: ${size / 1024 / 1024} MiB in memory, ${connections} connection(s). Ctrl-C to detach.`);
await lb.closed;
console.log(`${lb.path} detached; ${dev.allocated / 1024 / 1024} MiB were written`);
