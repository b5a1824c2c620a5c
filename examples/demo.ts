// The main job (`npm run demo`): serve a sparse 1 GiB in-memory export on
// nbd://localhost:10809, then show it through our client: list, info, a write
// read back, block status. Keeps serving until Ctrl-C (or exits with --exit).
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Client } from '@nbd/client';
import { AllocationState, flagNames, TransmissionFlag as TF } from '@nbd/protocol';
import { listenAndServe, MemoryDevice } from '@nbd/server';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '10809' },
    size: { type: 'string', default: String(1024 ** 3) },
    exit: { type: 'boolean', default: false },
  },
});
const uri = `nbd://localhost:${values.port}`;
const size = Number(values.size);
const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());

const ready = Promise.withResolvers<void>();
const served = listenAndServe(
  uri,
  [{ name: 'memory', description: `sparse in-memory export, ${size} bytes`, size, device: new MemoryDevice(size) }],
  { signal: ac.signal, onListen: () => ready.resolve() },
);
served.catch((err: unknown) => {
  console.error(`demo: server failed: ${(err as Error).message}`);
  process.exit(1);
});
await ready.promise;
console.log(`Serving ${uri} (export "memory", the default; ${size} bytes)\n`);

// ---- through our client
const client = await Client.connect(uri);
console.log('exports:', (await client.list()).map((e) => `${e.name} (${e.description})`).join(', '));
const info = await client.info('memory');
console.log(`size ${info.size}, flags ${flagNames(TF, info.flags).join(' ')}`);
console.log('block sizes', info.blockSizes);
const conn = await client.go('memory', { metaContexts: ['base:allocation'] });

const data = new TextEncoder().encode('hello from @nbd/client\n'.repeat(45_000)); // ~1 MiB
await conn.write(data, 4 * 1024 * 1024, { fua: true });
const back = await conn.read(4 * 1024 * 1024, data.length);
console.log(
  `wrote ${data.length} bytes at 4 MiB, read back ${Buffer.compare(Buffer.from(back), Buffer.from(data)) === 0 ? 'identical' : 'DIFFERENT'}`,
);

const status = await conn.blockStatus(0, 16 * 1024 * 1024);
console.log('base:allocation of the first 16 MiB:');
for (const e of status.get('base:allocation') ?? []) {
  const kind = (e.flags & AllocationState.HOLE ? 'hole' : 'data') + (e.flags & AllocationState.ZERO ? '+zero' : '');
  console.log(`  ${String(e.offset).padStart(9)} +${String(e.length).padEnd(9)} ${kind}`);
}
await conn.flush();
await conn.disconnect();

// ---- through a real peer, when libnbd's nbdinfo is installed
await new Promise<void>((resolve) => {
  execFile('nbdinfo', [`${uri}/memory`], (err, stdout) => {
    if (!err) console.log(`\nnbdinfo ${uri}/memory:\n${stdout}`);
    resolve();
  });
});

if (values.exit) {
  ac.abort();
} else {
  console.log(`Try:  nbdinfo --map ${uri}
      qemu-io -f raw -c 'read -v 4M 64' ${uri}/memory
      nbdcopy ${uri}/memory /tmp/copy.img
      nbd-client -l localhost ${values.port}
Ctrl-C stops the server.`);
}
await served;
