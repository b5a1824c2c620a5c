import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { socketPair } from '@nbd/node';
import { pumpFor } from './pump.js';

describe('pumpFor (a connection without a descriptor, reaching the kernel through a socketpair)', () => {
  test('copies both ways, and the kernel closing its end closes the connection', async () => {
    const [connection, server] = socketPair(); // `server` stands for the far end of a TLS session
    const { kernelEnd, done } = pumpFor(connection);
    kernelEnd.write(Buffer.from('request'));
    const [got] = (await once(server, 'data')) as [Buffer];
    expect(got.toString()).toBe('request');
    server.write(Buffer.from('reply'));
    const [back] = (await once(kernelEnd, 'data')) as [Buffer];
    expect(back.toString()).toBe('reply');
    kernelEnd.end();
    await once(server, 'end');
    server.end();
    await done;
    expect(connection.destroyed || connection.writableEnded).toBe(true);
  });

  test('the connection dying ends the kernel side too', async () => {
    const [connection, server] = socketPair();
    const { kernelEnd, done } = pumpFor(connection);
    server.destroy();
    kernelEnd.resume();
    await once(kernelEnd, 'end');
    kernelEnd.destroy();
    await done;
  });
});
