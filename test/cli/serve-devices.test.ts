// `nbd serve`'s device words and filters against nbdkit given the same command line:
// the same bytes (qemu-img compare) and the same map (nbdinfo --map); filters that
// write (cow), fail (error), log and count behave as nbdkit's do.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { type Peer, runOk, startNbdkit } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { nbd, startNbdServe } from './support.js';

const s = scoped('nbd-cli-devices-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** nbdkit and `nbd serve` with the same arguments: same size, same bytes, same map. */
async function sameAsNbdkit(args: string[], opts: { map?: boolean; ours?: string[] } = {}): Promise<void> {
  const [theirs, ours] = await Promise.all([peer(startNbdkit(args)), peer(startNbdServe([...(opts.ours ?? []), ...args]))]);
  const size = await runOk('nbdinfo', ['--size', theirs.uri]);
  expect(await runOk('nbdinfo', ['--size', ours.uri]), args.join(' ')).toBe(size);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', theirs.uri, ours.uri]);
  if (opts.map !== false)
    expect(await runOk('nbdinfo', ['--map', ours.uri]), args.join(' ')).toBe(await runOk('nbdinfo', ['--map', theirs.uri]));
}

describe('nbd serve devices and filters, against nbdkit', () => {
  test('sources: sparse-random (also on worker threads), pattern, random, data, null', async () => {
    await sameAsNbdkit(['sparse-random', '64M', 'seed=9', 'percent=25', 'runlength=1048576']);
    await sameAsNbdkit(['sparse-random', '32M', 'seed=4'], { ours: ['-t', '2'] });
    await sameAsNbdkit(['pattern', '8M']);
    await sameAsNbdkit(['random', '256K', 'seed=5'], { map: false });
    await sameAsNbdkit(['data', '@1048576 1 2 3 @2097152 "hello" ( 0x55 0xaa )*100', 'size=4M']);
    await sameAsNbdkit(['null', '4M'], { map: false });
  });

  test('filters: offset, truncate, partition, blocksize, read-only stacks', async () => {
    const dir = s.tmp();
    await sameAsNbdkit(['--filter=offset', 'pattern', '8M', 'offset=1M', 'range=2M']);
    await sameAsNbdkit(['--filter=truncate', 'pattern', '3M', 'truncate=5M']);
    await sameAsNbdkit(['--filter=truncate', 'pattern', '3000000', 'round-up=1M']);
    // A disk with two partitions, made by nbdkit's partitioning plugin.
    const [p1, p2, disk] = [join(dir, 'p1'), join(dir, 'p2'), join(dir, 'disk.img')];
    writeFileSync(p1, Buffer.alloc(1 << 20, 1));
    writeFileSync(p2, Buffer.alloc(2 << 20, 2));
    const parts = await peer(startNbdkit(['partitioning', p1, p2]));
    await runOk('nbdcopy', [parts.uri, disk]);
    await sameAsNbdkit(['--filter=partition', 'file', disk, 'partition=2']);
    await sameAsNbdkit(['--filter=offset', '--filter=partition', 'file', disk, 'partition=1', 'offset=4096', 'range=65536']);
    await sameAsNbdkit(['--filter=blocksize', 'file', disk, 'minblock=4096'], { map: false });
  });

  test('cow: writes land in the overlay, the file stays as it was', async () => {
    const dir = s.tmp();
    const img = join(dir, 'base.img');
    writeFileSync(img, Buffer.alloc(4 << 20, 3));
    const before = readFileSync(img);
    const p = await peer(startNbdServe(['--filter', 'cow', 'file', img, 'cow-block-size=4K']));
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 9 1M 8k', '-c', 'read -P 9 1M 8k', '-c', 'read -P 3 0 1M', p.uri]);
    expect(readFileSync(img).equals(before)).toBe(true);
  });

  test('error: injected errors reach the client with their errno; log and stats report requests', async () => {
    const dir = s.tmp();
    const err = await nbd([
      'serve',
      '-U',
      '-',
      '--filter',
      'error',
      'memory',
      '1M',
      'error-pread=ENOSPC',
      'error-pread-rate=100%',
      '--run',
      'qemu-io -f raw -c "read 0 4k" "$uri"',
    ]);
    expect(err.stdout + err.stderr).toMatch(/No space left on device/);
    const logged = await nbd([
      'serve',
      '-U',
      '-',
      '--filter',
      'log',
      'memory',
      '1M',
      '--run',
      'qemu-io -f raw -c "write -P 1 0 4k" "$uri" >/dev/null',
    ]);
    expect(logged.code).toBe(0);
    const entries = logged.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { command: string; offset: number; length: number });
    expect(entries).toContainEqual(expect.objectContaining({ command: 'write', offset: 0, length: 4096 }));
    const statsFile = join(dir, 'stats.json');
    const counted = await nbd([
      'serve',
      '-U',
      '-',
      '--filter',
      'stats',
      'memory',
      '1M',
      `statsfile=${statsFile}`,
      '--run',
      'qemu-io -f raw -c "write 0 64k" -c "read 0 64k" "$uri" >/dev/null',
    ]);
    expect(counted.code).toBe(0);
    const stats = JSON.parse(readFileSync(statsFile, 'utf8')) as { commands: Record<string, { ops: number; bytes: number }> };
    expect(stats.commands.write).toMatchObject({ ops: 1, bytes: 65536 });
    expect(stats.commands.read!.bytes).toBe(65536);
  });

  test('a device whose filters cannot be shared is refused with --threads; bad filter input is one line, exit 2; a cow file overlay keeps writes', async () => {
    const cases: [string[], RegExp][] = [
      [['serve', '-t', '2', 'sparse-memory', '1M'], /cannot be shared with worker threads/],
      [['serve', '--filter', 'nope', 'memory', '1M'], /unknown filter 'nope'/],
      [['serve', '--filter', 'partition', 'memory', '1M'], /needs partition=N/],
      [['serve', '--filter', 'delay', 'memory', '1M', 'rdelay=soon'], /rdelay=soon: expected seconds or NNms/],
      [['serve', '--filter', 'error', 'memory', '1M', 'error-rate=2'], /error-rate=2: expected a rate/],
      [['serve', 'data'], /data needs exactly one of/],
    ];
    for (const [args, message] of cases) {
      const r = await nbd(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const dir = s.tmp();
    const overlay = join(dir, 'overlay');
    // A cow file overlay: what was written survives, in the overlay file.
    const img = join(dir, 'base.img');
    writeFileSync(img, Buffer.alloc(1 << 20));
    const w = await nbd([
      'serve',
      '-U',
      '-',
      '--filter',
      'cow',
      'file',
      img,
      `cow-file=${overlay}`,
      '--run',
      'qemu-io -f raw -c "write -P 5 0 64k" -c flush "$uri" >/dev/null',
    ]);
    expect(w.code).toBe(0);
    expect(statSync(overlay).size).toBeGreaterThan(0);
  });
});
