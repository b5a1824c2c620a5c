// Serves a sparse in-memory export until SIGINT/SIGTERM: a minimal server kept for the
// benchmarks (bench/*.sh run it, also in an old commit's build). For the real command
// line use `nbd serve memory SIZE` (@nbd/cli).
//   node examples/dist/serve-memory.js --socket /tmp/nbd.sock --size 1G
//   node examples/dist/serve-memory.js --listen nbd://127.0.0.1:10809 --size 64M --name disk
//   node examples/dist/serve-memory.js --socket /tmp/nbd.sock --size 4G --threads 2
//   node examples/dist/serve-memory.js --socket /tmp/nbd.sock --tls-certificates /etc/pki/nbd   (TLS required)
// With --threads, connections are served on that many worker threads over a
// SharedMemoryDevice (one memory, every thread); without, on this thread.
import { parseArgs } from 'node:util';
import { listenAndServe, MemoryDevice, SharedMemoryDevice } from '@nbd/server';

const USAGE =
  'usage: serve-memory [--socket PATH | --listen URI] [--size SIZE] [--name NAME] [--description TEXT] [--threads N] [-v] [--tls-certificates DIR] [--tls-psk FILE]';

function fail(message: string): never {
  console.error(`serve-memory: ${message.split('\n')[0]}`);
  process.exit(1);
}

function options() {
  try {
    return parseArgs({
      options: {
        socket: { type: 'string' },
        listen: { type: 'string' },
        size: { type: 'string', default: '1G' },
        name: { type: 'string', default: '' },
        description: { type: 'string' },
        threads: { type: 'string', default: '0' },
        verbose: { type: 'boolean', short: 'v', default: false },
        'tls-certificates': { type: 'string' },
        'tls-psk': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    return fail(`${(e as Error).message.split('. ')[0]} (${USAGE})`);
  }
}

/** "4096", "64K", "1M", "4G", "1T" (binary units). */
function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(text.trim());
  if (!m) fail(`bad size "${text}"`);
  const unit = (m[2] ?? '').charAt(0).toUpperCase();
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[unit] ?? 0;
  const n = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(n)) fail(`size "${text}" is too large`);
  return n;
}

const values = options();
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const address = values.listen ?? (values.socket !== undefined ? { path: values.socket } : 'nbd://127.0.0.1:10809');
const size = parseSize(values.size!);
const threads = Number(values.threads);
if (!Number.isSafeInteger(threads) || threads < 0) fail(`bad --threads "${values.threads}"`);
const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());

const logger = values.verbose ? console : undefined;
const certificates = values['tls-certificates'];
const pskFile = values['tls-psk'];
const tls = certificates !== undefined || pskFile !== undefined ? { mode: 'require' as const, certificates, pskFile } : undefined;
await listenAndServe(
  address,
  [
    {
      name: values.name!,
      description: values.description ?? `memory, ${size} bytes`,
      size,
      device: threads > 0 ? new SharedMemoryDevice(size) : new MemoryDevice(size),
    },
  ],
  {
    threads,
    tls,
    signal: ac.signal,
    logger,
    onListen: (where) =>
      console.error(`serve-memory: ${size} bytes on ${typeof where === 'string' ? where : `${where.address}:${where.port}`}`),
  },
).catch((e: unknown) => fail((e as Error).message));
