// copy() and `nbd copy` from servers without structured replies, so without block
// status: the reference nbd-server 3.24, `nbdkit --no-sr`, oldstyle `nbdkit -o` and
// `nbd serve -o`. nbdcopy copies from all of them; so must we (every block read,
// all-zero ones still found by reading), with nbdcopy's bytes. Imports the built
// dist/: worker threads load JavaScript, not the TS sources.
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { copy } from '../../packages/copy/dist/index.js';
import { nbdOk, startNbdServe } from '../cli/support.js';
import { type Peer, runOk, startNbdkit, startNbdServer } from '../support/peers.js';
import { scoped } from '../support/scoped.js';

const MiB = 1024 * 1024;
const { tmp, defer } = scoped('nbd-copy-servers-');

async function nbdkit(args: string[], opts: string[]): Promise<Peer> {
  const p = await startNbdkit(args, opts);
  defer(() => p.stop());
  return p;
}
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const SIZE = 144 * MiB; // three 64 MiB chunks for threads
const SPARSE = ['sparse-random', `${SIZE}`, 'seed=11', 'percent=10', 'runlength=1048576'];

/** Copies `uri` to a file with copy() (one connection and four, two threads) and with nbdcopy; all equal, holes kept. */
async function copiesLikeNbdcopy(uri: string): Promise<void> {
  const dir = tmp();
  const theirs = join(dir, 'theirs.img');
  await runOk('nbdcopy', [uri, theirs]);
  for (const opts of [{ connections: 1 }, { connections: 4 }, { threads: 2 }]) {
    const ours = join(dir, `ours-${JSON.stringify(opts)}.img`);
    const r = await copy(uri, ours, opts);
    expect(r.bytes).toBe(SIZE);
    expect(r.zeroBytes, 'all-zero blocks are still found by reading').toBeGreaterThan(SIZE / 2);
    expect(sha(ours)).toBe(sha(theirs));
    expect(statSync(ours).blocks * 512).toBeLessThan(SIZE / 2);
  }
}

test('nbdkit --no-sr (fixed newstyle, structured replies refused)', async () => {
  await copiesLikeNbdcopy((await nbdkit(SPARSE, ['--no-sr'])).uri);
});

test('nbdkit -o (oldstyle)', async () => {
  await copiesLikeNbdcopy((await nbdkit(SPARSE, ['-o'])).uri);
});

test('nbd serve -o (our oldstyle server), through the command line', async () => {
  const peer: Peer = await startNbdServe(['-o', ...SPARSE]);
  defer(() => peer.stop());
  await copiesLikeNbdcopy(peer.uri);
  const dir = tmp();
  await nbdOk(['copy', peer.uri, join(dir, 'cli.img')]);
  await runOk('nbdcopy', [peer.uri, join(dir, 'theirs.img')]);
  expect(sha(join(dir, 'cli.img'))).toBe(sha(join(dir, 'theirs.img')));
});

test('nbd-server 3.24 (no structured replies): both ways, the command line too', async () => {
  const dir = tmp();
  const disk = join(dir, 'disk.img');
  const data = Buffer.alloc(16 * MiB);
  for (let i = 0; i < 4 * MiB; i++) data[i] = (i * 7 + 3) & 0xff; // the rest zero
  writeFileSync(disk, data);
  const back = join(dir, 'back.img');
  writeFileSync(back, Buffer.alloc(16 * MiB, 0xee));
  const peer = await startNbdServer({ disk: { file: disk }, back: { file: back } });
  defer(() => peer.stop());
  await copiesLikeNbdcopyFrom(peer.uri, data);
  // As a destination: zeroes are written where the source has them.
  const backUri = peer.uri.replace('/disk?', '/back?');
  await nbdOk(['copy', disk, backUri]);
  expect(readFileSync(back).equals(data)).toBe(true);
});

async function copiesLikeNbdcopyFrom(uri: string, data: Buffer): Promise<void> {
  const dir = tmp();
  const ours = join(dir, 'ours.img');
  const r = await copy(uri, ours, { connections: 2 });
  expect(r.zeroBytes).toBe(12 * MiB);
  expect(readFileSync(ours).equals(data)).toBe(true);
  await nbdOk(['copy', uri, join(dir, 'cli.img')]);
  await runOk('nbdcopy', [uri, join(dir, 'theirs.img')]);
  expect(sha(join(dir, 'cli.img'))).toBe(sha(join(dir, 'theirs.img')));
}
