// Type-checked (never run) in a fresh consumer project against the packed packages,
// with the strictest settings a user may have: strict, exactOptionalPropertyTypes,
// noUncheckedIndexedAccess and skipLibCheck false (so every shipped .d.ts is checked).
// The same file is checked as ESM and as CommonJS (require of the ES modules).
import { Client, type Connection, connectMulti, type ExportInfo } from '@nbd/client';
import { copy } from '@nbd/copy';
import { cow, FileDevice, stack } from '@nbd/devices';
import { configure, loopback } from '@nbd/linux';
import * as node from '@nbd/node';
import { AllocationState, NbdError, type NbdUri, parseNbdUri } from '@nbd/protocol';
import { type Device, type Export, type IoOptions, listenAndServe, MemoryDevice } from '@nbd/server';

/** A user's own device: only what the Device interface asks for. */
class ZeroDevice implements Device {
  readonly readOnly = true;
  readAt(buf: Uint8Array, _offset: number, _opts: IoOptions): void {
    buf.fill(0);
  }
}

export async function consumer(signal: AbortSignal): Promise<void> {
  const exports: Export[] = [
    { name: 'zero', size: 1 << 20, device: new ZeroDevice() },
    { name: 'memory', description: 'scratch', size: 1 << 20, device: new MemoryDevice(1 << 20) },
    { name: 'file', size: 0, device: await FileDevice.open('/dev/null', { readOnly: true }) },
    { name: 'overlay', size: 1 << 20, device: await stack(new MemoryDevice(1 << 20), (base) => cow(base)) },
  ];
  const served = listenAndServe('nbd+unix:///?socket=/tmp/consumer.sock', exports, { signal });

  const uri: NbdUri = parseNbdUri('nbd+unix:///memory?socket=/tmp/consumer.sock');
  const client = await Client.connect(uri.socket ?? '', { signal, handshakeTimeout: 5000, tls: { mode: 'off' } });
  const info: ExportInfo = await client.info('memory', { signal });
  const conn: Connection = await client.go('memory', { metaContexts: ['base:allocation'], signal });
  const bytes: Uint8Array = await conn.read(0, 4096, { signal });
  await conn.write(bytes, 4096, { fua: true });
  const map = await conn.blockStatus(0, info.size);
  const holes = (map.get('base:allocation') ?? []).filter((e) => (e.flags & AllocationState.HOLE) !== 0);
  await conn.disconnect();

  const multi = await connectMulti('nbd+unix:///memory?socket=/tmp/consumer.sock', { connections: 2 });
  await multi.disconnect();
  await copy('nbd+unix:///memory?socket=/tmp/consumer.sock', 'null:', { onProgress: (p) => p.done });

  try {
    const lb = await loopback(new MemoryDevice(1 << 20), 1 << 20, { signal });
    await lb.closed;
    await configure([], { mode: 'netlink' });
  } catch (e) {
    if (e instanceof NbdError) console.log(e.code, holes.length, Object.keys(node).length);
  }
  await served;
}
