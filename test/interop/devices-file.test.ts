// FileDevice on regular files through real clients: its map equals nbdkit's file
// plugin's on the same sparse file, a discard frees blocks, qemu-img convert of a
// sparse qcow2 into our export stays sparse, fast zero is refused where it would
// write, and O_DIRECT serves what it is given.
import { randomFillSync } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDevice } from '@nbd/devices';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { closing } from '../support/closing.js';
import { type Peer, runOk, runPython, startNbdkit, tempDir } from '../support/peers.js';
import { EACH_QEMU, qemuTool } from '../support/qemu.js';
import { mapOf, sparseFile } from './devices-support.js';
import { type OurServer, startOurServer } from './server-support.js';

const MiB = 1024 * 1024;
const allocated = (path: string) => statSync(path).blocks * 512;

describe('FileDevice through NBD clients', () => {
  const keep = closing();
  const tmp = tempDir('nbd-dev-file-');
  let ours: OurServer | undefined;
  let kit: Peer | undefined;
  const serve = async (dev: FileDevice) => (ours = await startOurServer([{ name: '', size: dev.size, device: dev }]));
  afterEach(async () => {
    await ours?.stop();
    await kit?.stop();
    ours = kit = undefined;
  });
  afterAll(() => tmp.cleanup());

  it("nbdinfo --map equals nbdkit file plugin's on the same sparse file", async () => {
    const path = join(tmp.dir, 'sparse.img');
    sparseFile(path, 64 * MiB, [
      [0, 4096],
      [MiB, 3 * MiB],
      [10 * MiB + 8192, 12_345],
      [63 * MiB, MiB],
    ]);
    await serve(keep(await FileDevice.open(path, { readOnly: true })));
    kit = await startNbdkit(['file', path]);
    const map = await mapOf(ours!.uri());
    expect(map).toBe(await mapOf(kit.uri));
    expect(map.trim().split('\n').length).toBe(7);
  });

  it("a discard frees the file's blocks; a zero with NO_HOLE allocates them, a zero that may unmap frees them", async () => {
    const path = join(tmp.dir, 'full.img');
    writeFileSync(path, randomFillSync(Buffer.alloc(16 * MiB)));
    await serve(keep(await FileDevice.open(path)));
    const before = allocated(path);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'discard 0 8M', ours!.uri()]);
    const afterDiscard = allocated(path);
    expect(afterDiscard).toBeLessThanOrEqual(before - 8 * MiB);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -z 0 4M', ours!.uri()]); // NO_HOLE: ZERO_RANGE
    expect(allocated(path)).toBeGreaterThanOrEqual(afterDiscard + 4 * MiB);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -z -u 8M 4M', ours!.uri()]); // may unmap: a hole
    expect(allocated(path)).toBeLessThanOrEqual(afterDiscard);
    expect(
      readFileSync(path)
        .subarray(0, 12 * MiB)
        .every((b) => b === 0),
    ).toBe(true);
  });

  it.each(EACH_QEMU)('qemu-img %s convert of a sparse qcow2 into our export stays sparse (zeroes become holes)', async (version, q) => {
    const img = qemuTool(q, 'qemu-img');
    const src = join(tmp.dir, `src-${version}.qcow2`);
    await runOk(img, ['create', '-q', '-f', 'qcow2', src, '64M']);
    await runOk(qemuTool(q, 'qemu-io'), ['-f', 'qcow2', '-c', 'write -P 0x61 1M 2M', '-c', 'write -P 0x62 40M 512k', src]);
    const target = join(tmp.dir, `target-${version}.img`);
    writeFileSync(target, randomFillSync(Buffer.alloc(64 * MiB))); // fully allocated, not zero
    await serve(keep(await FileDevice.open(target)));
    await runOk(img, ['convert', '-n', '-f', 'qcow2', '-O', 'raw', src, ours!.uri()]);
    await ours!.stop();
    ours = undefined;
    await runOk(img, ['compare', '-f', 'qcow2', '-F', 'raw', src, target]);
    expect(allocated(target)).toBeLessThan(4 * MiB);
  });

  it('a fast zero with NO_HOLE is refused (ENOTSUP) on tmpfs, which cannot zero without writing; without NO_HOLE it punches', async () => {
    const path = `/dev/shm/nbd-dev-fastzero-${process.pid}.img`;
    writeFileSync(path, Buffer.alloc(MiB, 1));
    try {
      await serve(keep(await FileDevice.open(path)));
      const script = [
        'import nbd, sys',
        'h = nbd.NBD()',
        'h.connect_uri(sys.argv[1])',
        'assert h.can_fast_zero()',
        'try:',
        '    h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)',
        '    print("accepted")',
        'except nbd.Error as e:',
        '    print("refused", e.errno)',
        'h.zero(65536, 65536, nbd.CMD_FLAG_FAST_ZERO)',
        'print(h.pread(4, 65536).hex(), h.pread(4, 0).hex())',
      ].join('\n');
      const r = await runPython(script, [ours!.uri()]);
      expect(r.stderr).toBe('');
      expect(r.stdout.trim().split('\n')).toEqual(['refused ENOTSUP', '00000000 01010101']);
    } finally {
      rmSync(path, { force: true });
    }
  });

  it('O_DIRECT: block sizes advertised, qemu-io writes land in the file', async () => {
    const path = join(tmp.dir, 'direct.img');
    sparseFile(path, 8 * MiB, []);
    await serve(keep(await FileDevice.open(path, { direct: true })));
    const info = JSON.parse(await runOk('nbdinfo', ['--json', ours!.uri()]));
    expect(info.exports[0].block_size_minimum).toBe(4096);
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x7e 4096 64k',
      '-c',
      'write -f -P 0x7f 1M 8k',
      '-c',
      'read -P 0x7e 4096 64k',
      ours!.uri(),
    ]);
    const f = readFileSync(path);
    expect(f.subarray(4096, 4096 + 65536).every((b) => b === 0x7e)).toBe(true);
    expect(f.subarray(MiB, MiB + 8192).every((b) => b === 0x7f)).toBe(true);
  });
});
