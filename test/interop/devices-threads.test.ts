// Filter stacks served on worker threads: share() names the chain, each worker
// rebuilds it over its own handle on the base, and the state that must be one
// (cow block states and locks, stats counters) is shared memory. Imports the built
// dist/: worker threads load JavaScript.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  blocksize,
  CowFileOverlay,
  cow,
  FileDevice,
  log,
  offset,
  SparseRandomDevice,
  stack,
  stats,
} from '../../packages/devices/dist/index.js';
import { type Export, listenAndServe, SharedMemoryDevice } from '../../packages/server/dist/index.js';
import { closing } from '../support/closing.js';
import { runOk, tempDir } from '../support/peers.js';
import { type OurServer, startOurServer } from './server-support.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const start = (exports: Export[]) => startOurServer(exports, { threads: 2 }, listenAndServe);

describe('filter stacks on worker threads', () => {
  const keep = closing();
  const tmp = tempDir('nbd-dev-threads-');
  let srv: OurServer | undefined;
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });
  afterAll(() => tmp.cleanup());

  it('stats(cow(file)) with a file overlay: nbdcopy over 4 connections, base untouched, counters from every worker', async () => {
    const base = join(tmp.dir, 'base.img');
    const baseBytes = randomFillSync(Buffer.alloc(SIZE));
    writeFileSync(base, baseBytes);
    const src = join(tmp.dir, 'src.img');
    const data = randomFillSync(Buffer.alloc(SIZE));
    data.fill(0, 8 * MiB, 12 * MiB);
    writeFileSync(src, data);
    const file = keep(await FileDevice.open(base, { readOnly: true }));
    const dev = stats(cow(file, { overlay: keep(await CowFileOverlay.open(join(tmp.dir, 'overlay'), { size: SIZE })) }));
    srv = await start([{ name: '', size: SIZE, device: dev }]);
    await runOk('nbdcopy', ['--connections=4', src, srv.uri()]);
    const out = join(tmp.dir, 'out.img');
    await runOk('nbdcopy', ['--connections=4', srv.uri(), out]);
    expect(Buffer.compare(readFileSync(out), data)).toBe(0);
    expect(Buffer.compare(readFileSync(base), baseBytes)).toBe(0);
    const s = dev.stats();
    expect(s.commands.write.bytes + s.commands.zero.bytes).toBeGreaterThanOrEqual(SIZE - 4 * MiB);
    expect(s.commands.read.bytes).toBeGreaterThan(0);
  });

  it('cow over a SharedMemoryDevice overlay, and blocksize over offset over a sparse-random source', async () => {
    const overlay = new SharedMemoryDevice(SIZE + MiB);
    const source = new SparseRandomDevice(SIZE + MiB, { seed: 9, percent: 40, runLength: MiB });
    const a = cow(source, { overlay });
    const b = await stack(
      source,
      (d) => offset(d, { offset: MiB }),
      (d) => blocksize(d, { minBlock: 4096 }),
    );
    srv = await start([
      { name: 'cow', size: SIZE, device: a },
      { name: 'bs', size: SIZE, device: b },
    ]);
    const src = join(tmp.dir, 'src2.img');
    writeFileSync(src, randomFillSync(Buffer.alloc(SIZE)));
    await runOk('nbdcopy', ['--connections=4', src, srv.uri('cow')]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('cow')]);
    // The sparse-random source accepts only what it holds: copying it onto itself through the stack verifies every write.
    const self = join(tmp.dir, 'self.img');
    await runOk('nbdcopy', [srv.uri('bs'), self]);
    await runOk('nbdcopy', ['--connections=4', self, srv.uri('bs')]);
  });

  it('a stack with a callback cannot go to worker threads (no share), and says so', async () => {
    const dev = log(new SparseRandomDevice(MiB, { seed: 1 }), { sink: () => {} });
    expect(dev.share).toBeUndefined();
    await expect(start([{ name: '', size: MiB, device: dev }])).rejects.toThrow(/shareable/);
  });
});
