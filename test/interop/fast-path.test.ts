// The fast read path (the kernel reads straight into our arenas) depends on Node
// internals; this runs on every supported Node line and fails if either side falls
// back to copying on a plain unix socket.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Client } from '@nbd/client';
import { expect, test } from 'vitest';
import { runOk } from '../support/peers.js';
import { startOurServer } from './server-support.js';

test(`Node ${process.versions.node}: our server and our client both take the fast read path`, async () => {
  const seen: { direct: boolean; reason?: string }[] = [];
  const listener = (m: unknown) => seen.push(m as { direct: boolean; reason?: string });
  subscribe('@nbd/node:fast-read', listener);
  const srv = await startOurServer();
  try {
    // A peer that is not ours drives our server into transmission.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', srv.uri()]);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((m) => !m.direct)).toEqual([]);
    const conn = await (await Client.connect(srv.uri())).go();
    expect(conn.readMode).toBe('direct');
    expect((await conn.read(0, 1 << 20)).every((b) => b === 0x11)).toBe(true);
    await conn.disconnect();
  } finally {
    unsubscribe('@nbd/node:fast-read', listener);
    await srv.stop();
  }
});
