// Byte-exact vectors captured from real peers (see README.md): every frame must
// decode, nothing may be left over, and re-encoding every decoded message must
// reproduce both directions of the conversation byte for byte.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { requireTool } from '../support/peers.js';
import { QEMU_10, qemuTool } from '../support/qemu.js';
// @ts-expect-error: a plain Node script, no type declarations
import { capture, scenarios } from './capture.mjs';
import { type Connection, replay } from './replay.js';

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
      // qemu 10.0: extended headers
      'option extended-headers',
      'transmission extended',
      'chunk BLOCK_STATUS_EXT',
      'chunk NONE',
      'request WRITE FUA',
    ]) {
      expect(seen, `no captured ${kind}`).toContain(kind);
    }
  });

  test('extended headers were negotiated where qemu 10 is on both ends, and only there', () => {
    const mode = (v: Vector) => {
      const modes = new Set(v.connections.flatMap((c) => [...replay(c)].filter((k) => k.startsWith('transmission '))));
      expect(modes.size, v.name).toBeLessThanOrEqual(1); // none for a listing that never reaches transmission
      return [...modes][0];
    };
    const byName = new Map(vectors.map((v) => [v.name, v]));
    for (const name of ['qemu10-nbd-raw-qemu10-io', 'qemu10-nbd-qcow2-qemu10-img-map', 'ours-qemu10-io']) {
      expect(mode(byName.get(name)!), name).toBe('transmission extended');
    }
    // libnbd 1.14's nbdinfo does not ask for them; qemu-nbd 10 serves it structured replies.
    expect(mode(byName.get('qemu10-nbd-qcow2-nbdinfo-map')!)).toBe('transmission structured');
    for (const v of vectors.filter((x) => !x.name.includes('qemu10'))) expect(mode(v) ?? 'none', v.name).not.toBe('transmission extended');
    // qemu-io 10's WRITE: FUA, and no PAYLOAD_LEN although the header is extended.
    const io = byName.get('ours-qemu10-io')!.connections.flatMap((c) => [...replay(c)]);
    expect(io).toContain('request WRITE FUA');
    expect(io.filter((k) => k.startsWith('request WRITE ') && k.includes('PAYLOAD_LEN'))).toEqual([]);
  });
});

describe('live capture through record.mjs', () => {
  // Re-records two scenarios from the real peers now (fresh cookies, sizes and
  // timings) and replays them: the recorder and the decoders agree today, too.
  test.each(['nbdkit-no-sr-qemu-io', 'qemu-nbd-named-nbdinfo-list', 'qemu10-nbd-raw-qemu10-io'])('%s', async (name) => {
    for (const tool of ['nbdkit', 'qemu-io', 'qemu-img', 'qemu-nbd', 'nbdinfo']) requireTool(tool); // missing peer: fail, not skip
    for (const tool of ['qemu-nbd', 'qemu-io'] as const) qemuTool(QEMU_10, tool);
    const sc = (scenarios as { name: string }[]).find((s) => s.name === name);
    expect(sc).toBeDefined();
    const v = (await capture(sc)) as Vector;
    expect(v.connections.length).toBe(1);
    const kinds = replay(v.connections[0]!);
    expect(kinds.size).toBeGreaterThan(5);
  });
});
