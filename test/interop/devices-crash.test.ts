// Nothing acknowledged is lost when the server process is killed: writes to a cow
// overlay in files after a FLUSH, and a FUA write through a filter stack onto a
// FileDevice, are there after SIGKILL and a restart.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PATH, run, runOk, tempDir, unixUri, waitForSocket } from '../support/peers.js';

const MiB = 1024 * 1024;
const fixture = new URL('./fixtures/devices-server.mjs', import.meta.url).pathname;

describe('SIGKILL of the server loses nothing acknowledged', () => {
  const tmp = tempDir('nbd-dev-crash-');
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
  });
  afterAll(() => tmp.cleanup());

  /** Starts the fixture server; resolves with its URI once it listens. */
  async function start(name: string, args: string[]): Promise<string> {
    const socket = join(tmp.dir, `${name}.sock`);
    child = spawn(process.execPath, [fixture, socket, ...args], { env: { ...process.env, PATH }, stdio: ['ignore', 'pipe', 'inherit'] });
    await waitForSocket(socket, 15_000, child);
    return unixUri(socket);
  }
  async function kill(): Promise<void> {
    const c = child!;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
    child = undefined;
  }

  it('cow overlay in files: what was written before a FLUSH is there after SIGKILL and a restart', async () => {
    const base = join(tmp.dir, 'base.img');
    const baseBytes = randomFillSync(Buffer.alloc(16 * MiB));
    writeFileSync(base, baseBytes);
    const overlay = join(tmp.dir, 'overlay');
    let uri = await start('cow1', ['cow', base, overlay]);
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xa1 100000 300000',
      '-c',
      'write -P 0xa2 5M 1M',
      '-c',
      'discard 8M 1M',
      '-c',
      'flush',
      uri,
    ]);
    await kill();
    uri = await start('cow2', ['cow', base, overlay]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0xa1 100000 300000', '-c', 'read -P 0xa2 5M 1M', '-c', 'read -P 0 8M 1M', uri]);
    // The rest is still the base's, and the base file was never written.
    const out = join(tmp.dir, 'out.img');
    await runOk('nbdcopy', [uri, out]);
    const got = readFileSync(out);
    expect(Buffer.compare(got.subarray(400_000, 5 * MiB), baseBytes.subarray(400_000, 5 * MiB))).toBe(0);
    expect(Buffer.compare(readFileSync(base), baseBytes)).toBe(0);
    await kill();
    // The check can fail: over a fresh overlay the data is not there.
    uri = await start('cow3', ['cow', base, join(tmp.dir, 'other-overlay')]);
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xa2 5M 1M', uri]);
    expect(r.stdout + r.stderr).toContain('Pattern verification failed');
  });

  it('a FUA write through offset, blocksize and stats onto a FileDevice is in the file after SIGKILL', async () => {
    const file = join(tmp.dir, 'fua.img');
    writeFileSync(file, Buffer.alloc(8 * MiB));
    const uri = await start('fua', ['fua', file]);
    // Unaligned: the blocksize filter read-modify-writes its ends, with FUA.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -f -P 0xc3 12345 70000', uri]);
    await kill();
    const f = readFileSync(file);
    const at = MiB + 12345;
    expect(f.subarray(at, at + 70000).every((b) => b === 0xc3)).toBe(true);
    expect(f[at - 1]).toBe(0);
    expect(f[at + 70000]).toBe(0);
  });
});
