// Byte-exact vectors captured from real peers (see README.md): every frame must
// decode, nothing may be left over, and re-encoding every decoded message must
// reproduce both directions of the conversation byte for byte.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { requireTool } from '../support/peers.js';
import { type Connection, replay } from './replay.js';
// @ts-expect-error: a plain Node script, no type declarations
import { capture, scenarios } from './capture.mjs';

interface Vector {
  name: string;
  server: string;
  client: string;
  connections: Connection[];
}

const dir = new URL('./vectors/', import.meta.url);
const vectors: Vector[] = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(new URL(f, dir), 'utf8')) as Vector);

describe('captured vectors', () => {
  const seen = new Set<string>();

  test.each(vectors.map((v) => [v.name, v] as const))('%s', (_name, v) => {
    expect(v.connections.length).toBeGreaterThan(0);
    for (const conn of v.connections) for (const k of replay(conn)) seen.add(k);
  });

  test('the vectors cover every message kind the README promises', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(15);
    for (const kind of [
      'greeting newstyle',
      'greeting oldstyle',
      'option export-name',
      'export-name reply',
      'option go',
      'option info',
      'option list',
      'option abort',
      'option structured-reply',
      'option set-meta-context',
      'option list-meta-context',
      'reply ack',
      'reply server',
      'reply meta-context',
      'reply info export',
      'reply info block-size',
      'reply info description',
      'reply ERR_UNKNOWN',
      'request READ',
      'request WRITE with payload',
      'request FLUSH',
      'request BLOCK_STATUS',
      'request DISC',
      'reply ERR_UNSUP',
      'reply info name',
      'request WRITE_ZEROES',
      'request TRIM',
      'simple reply',
      'simple reply error',
      'simple reply with data',
      'chunk OFFSET_DATA',
      'chunk OFFSET_HOLE',
      'chunk BLOCK_STATUS',
      'chunk ERROR',
    ]) {
      expect(seen, `no captured ${kind}`).toContain(kind);
    }
  });
});

describe('live capture through record.mjs', () => {
  // Re-records two scenarios from the real peers now (fresh cookies, sizes and
  // timings) and replays them: the recorder and the decoders agree today, too.
  test.each(['nbdkit-no-sr-qemu-io', 'qemu-nbd-named-nbdinfo-list'])('%s', async (name) => {
    for (const tool of ['nbdkit', 'qemu-io', 'qemu-img', 'qemu-nbd', 'nbdinfo']) requireTool(tool); // missing peer: fail, not skip
    const sc = (scenarios as { name: string }[]).find((s) => s.name === name);
    expect(sc).toBeDefined();
    const v = (await capture(sc)) as Vector;
    expect(v.connections.length).toBe(1);
    const kinds = replay(v.connections[0]!);
    expect(kinds.size).toBeGreaterThan(5);
  });
});
