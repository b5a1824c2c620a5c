// Errors injected by the error filter reach real NBD clients as the errno asked
// (qemu-io, nbdinfo, python3-libnbd); under a retry filter the same errors are
// absorbed and a copy comes out whole.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { injectErrors, retry, SparseMemoryDevice, stats } from '@nbd/devices';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { run, runOk, runPython, tempDir } from '../support/peers.js';
import { type OurServer, startOurServer } from './server-support.js';

const MiB = 1024 * 1024;

describe('injected errors through NBD clients', () => {
  const tmp = tempDir('nbd-dev-err-');
  let srv: OurServer | undefined;
  afterEach(async () => {
    await srv?.stop();
    srv = undefined;
  });
  afterAll(() => tmp.cleanup());

  it('qemu-io, nbdinfo and libnbd see the errno of each command', async () => {
    const dev = injectErrors(new SparseMemoryDevice(8 * MiB), {
      commands: {
        write: { rate: 1, errno: 'ENOSPC' },
        read: { rate: 1, errno: 'EPERM' },
        extents: { rate: 1 },
        trim: { rate: 1, errno: 'EINVAL' },
      },
    });
    srv = await startOurServer([{ name: '', size: 8 * MiB, device: dev }]);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', srv.uri()]);
    expect(w.stdout + w.stderr).toContain('write failed: No space left on device');
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', srv.uri()]);
    expect(r.stdout + r.stderr).toContain('read failed: Operation not permitted');
    const m = await run('nbdinfo', ['--map', srv.uri()]);
    expect(m.code).not.toBe(0);
    expect(m.stderr).toContain('Input/output error');
    const script = [
      'import nbd, sys',
      'h = nbd.NBD()',
      'h.connect_uri(sys.argv[1])',
      'for name, f in [("pread", lambda: h.pread(512, 0)), ("pwrite", lambda: h.pwrite(b"x" * 512, 0)), ("trim", lambda: h.trim(512, 0)), ("zero", lambda: h.zero(512, 0))]:',
      '    try:',
      '        f()',
      '        print(name, "ok")',
      '    except nbd.Error as e:',
      '        print(name, e.errno)',
    ].join('\n');
    const py = await runPython(script, [srv.uri()]);
    expect(py.stdout.trim().split('\n')).toEqual(['pread EPERM', 'pwrite ENOSPC', 'trim EINVAL', 'zero ok']);
  });

  it('under retry, a 30% error rate on reads and writes still copies byte for byte', async () => {
    const counted = stats(
      injectErrors(new SparseMemoryDevice(16 * MiB), { commands: { read: { rate: 0.3 }, write: { rate: 0.3 } }, seed: 7 }),
    );
    const dev = retry(counted, { retries: 12, delay: 1 });
    srv = await startOurServer([{ name: '', size: 16 * MiB, device: dev }]);
    const src = join(tmp.dir, 'src.img');
    writeFileSync(src, randomFillSync(Buffer.alloc(16 * MiB)));
    await runOk('nbdcopy', [src, srv.uri()]);
    const out = join(tmp.dir, 'out.img');
    await runOk('nbdcopy', [srv.uri(), out]);
    expect(Buffer.compare(readFileSync(out), readFileSync(src))).toBe(0);
    const s = counted.stats();
    expect(s.commands.read.errors).toBeGreaterThan(0);
    expect(s.commands.write.errors).toBeGreaterThan(0);
  });
});
