// A listening server as a value: its address, its connections, close() and `await using`.
import { join } from 'node:path';
import { listen, MemoryDevice } from '@nbd/server';
import { expect, test } from 'vitest';
import { run, runOk, tempDir, unixUri } from '../support/peers.js';

const SIZE = 1 << 20;

test('listen() gives a server that `await using` closes; its clients are wound down, not cut mid-request', async () => {
  const { dir, cleanup } = tempDir('nbd-listen-');
  const path = join(dir, 's.sock');
  try {
    {
      await using server = await listen({ path }, [{ name: 'm', size: SIZE, device: new MemoryDevice(SIZE) }]);
      expect(server.address).toBe(path);
      expect((await runOk('nbdinfo', ['--size', unixUri(path, 'm')])).trim()).toBe(String(SIZE));
      // nbdinfo has gone; the server sees its close once the event loop gets to it.
      await expect.poll(() => server.connectionCount, { timeout: 5000 }).toBe(0);
    }
    // Disposed: nothing listens any more.
    expect((await run('nbdinfo', ['--size', unixUri(path, 'm')])).code).not.toBe(0);
  } finally {
    cleanup();
  }
});

test('close() settles once every connection has closed, and closed settles with it', async () => {
  const { dir, cleanup } = tempDir('nbd-listen-');
  try {
    const server = await listen({ path: join(dir, 's.sock') }, [{ name: '', size: SIZE, device: new MemoryDevice(SIZE) }]);
    const closing = server.close();
    await expect(server.closed).resolves.toBeUndefined();
    await closing;
    await server.close(); // again: no-op
  } finally {
    cleanup();
  }
});
