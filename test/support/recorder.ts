// The recording proxy of test/captures (record.mjs) in front of a server's unix socket,
// so a test can replay what really crossed the wire (test/captures/replay.ts).
import { join } from 'node:path';
// @ts-expect-error: a plain Node script, no type declarations
import { startRecorder } from '../captures/record.mjs';
import type { Connection } from '../captures/replay.js';
import { tempDir, unixUri } from './peers.js';

export interface Recorder {
  /** The proxy's socket: connect clients here. */
  socket: string;
  uri: (exportName?: string) => string;
  /** Closes the proxy, waits for its connections to end; both directions of each, in accept order. */
  stop: () => Promise<Connection[]>;
}

export async function recordTo(serverSocket: string): Promise<Recorder> {
  const { dir, cleanup } = tempDir('nbd-rec-');
  const socket = join(dir, 'proxy.sock');
  const rec = startRecorder(socket, serverSocket) as { listening: Promise<void>; stop: (ms?: number) => Promise<Connection[]> };
  await rec.listening;
  return {
    socket,
    uri: (name = '') => unixUri(socket, name),
    stop: async () => {
      try {
        return await rec.stop();
      } finally {
        cleanup();
      }
    },
  };
}
