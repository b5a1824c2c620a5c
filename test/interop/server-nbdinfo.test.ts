// Our server against nbdinfo (libnbd), qemu-nbd -L and nbd-client -l: listing,
// export info, flags and the allocation map.

import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runOk } from '../support/peers.js';
import { EACH_QEMU, qemuTool } from '../support/qemu.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

describe('our server vs nbdinfo / qemu-nbd -L / nbd-client -l', () => {
  let srv: OurServer;
  let ro: OurServer;
  const mem = new MemoryDevice(64 * MiB);

  beforeAll(async () => {
    // Data at 1 MiB..1 MiB+64 KiB, holes elsewhere.
    mem.writeAt(new Uint8Array(64 * 1024).fill(0xab), MiB);
    srv = await startOurServer([
      { name: 'disk', description: 'the main disk', size: 64 * MiB, device: mem },
      { name: 'other', description: 'a second export', size: 2 * MiB, device: new MemoryDevice(2 * MiB) },
    ]);
    const readOnlyDevice = { readAt: (b: Uint8Array) => void b.fill(7), rotational: true };
    ro = await startOurServer([{ name: 'ro', size: 4 * MiB, device: readOnlyDevice }]);
  });
  afterAll(async () => {
    await srv?.stop();
    await ro?.stop();
  });

  it('nbdinfo --list shows every export with its description', async () => {
    const out = await runOk('nbdinfo', ['--list', srv.uri()]);
    expect(out).toContain('export="disk"');
    expect(out).toContain('description: the main disk');
    expect(out).toContain('export="other"');
    expect(out).toContain('description: a second export');
  });

  it('nbdinfo --json reports size, flags, block sizes and base:allocation', async () => {
    const info = JSON.parse(await runOk('nbdinfo', ['--json', srv.uri('disk')]));
    expect(info.protocol).toBe('newstyle-fixed');
    const e = info.exports[0];
    expect(e['export-name']).toBe('disk');
    expect(e['export-size']).toBe(64 * MiB);
    expect(e.description).toBe('the main disk');
    expect(e.contexts).toContain('base:allocation');
    expect(e.is_read_only).toBe(false);
    expect(e.can_flush).toBe(true);
    expect(e.can_fua).toBe(true);
    expect(e.can_trim).toBe(true);
    expect(e.can_zero).toBe(true);
    expect(e.can_fast_zero).toBe(true);
    expect(e.can_multi_conn).toBe(true);
    expect(e.can_cache).toBe(true);
    expect(e.can_df).toBe(true);
    expect(e.block_size_minimum).toBe(1);
    expect(e.block_size_preferred).toBe(4096);
    expect(e.block_size_maximum).toBe(32 * MiB);
  });

  it('nbdinfo --can / --is exit codes follow the device', async () => {
    for (const what of ['flush', 'trim', 'zero', 'fua', 'multi-conn', 'cache', 'fast-zero', 'df']) {
      expect((await run('nbdinfo', ['--can', what, srv.uri('disk')])).code, what).toBe(0);
    }
    expect((await run('nbdinfo', ['--is', 'read-only', srv.uri('disk')])).code).not.toBe(0);
    expect((await run('nbdinfo', ['--is', 'rotational', srv.uri('disk')])).code).not.toBe(0);
    // A device with only readAt: read-only, rotational, nothing else.
    expect((await run('nbdinfo', ['--is', 'read-only', ro.uri('ro')])).code).toBe(0);
    expect((await run('nbdinfo', ['--is', 'rotational', ro.uri('ro')])).code).toBe(0);
    for (const what of ['flush', 'trim', 'zero', 'fua', 'multi-conn', 'fast-zero']) {
      expect((await run('nbdinfo', ['--can', what, ro.uri('ro')])).code, what).not.toBe(0);
    }
  });

  it('nbdinfo --map shows the holes and the data', async () => {
    const out = await runOk('nbdinfo', ['--map', '--json', srv.uri('disk')]);
    const map = JSON.parse(out) as { offset: number; length: number; type: number }[];
    expect(map).toEqual([
      { offset: 0, length: MiB, type: 3, description: 'hole,zero' },
      { offset: MiB, length: 64 * 1024, type: 0, description: 'data' },
      { offset: MiB + 64 * 1024, length: 63 * MiB - 64 * 1024, type: 3, description: 'hole,zero' },
    ]);
    // Without extents every byte is data.
    const roMap = JSON.parse(await runOk('nbdinfo', ['--map', '--json', ro.uri('ro')]));
    expect(roMap).toEqual([{ offset: 0, length: 4 * MiB, type: 0, description: 'data' }]);
  });

  it('an unknown export is refused', async () => {
    const r = await run('nbdinfo', [srv.uri('nope')]);
    expect(r.code).not.toBe(0);
  });

  it.each(EACH_QEMU)('qemu-nbd %s -L lists the exports', async (_version, q) => {
    const out = await runOk(qemuTool(q, 'qemu-nbd'), ['-L', '-k', srv.socket]);
    expect(out).toContain('exports available: 2');
    expect(out).toMatch(/export: 'disk'[\s\S]*description: the main disk[\s\S]*size:\s+67108864/);
    expect(out).toContain("export: 'other'");
    expect(out).toContain('base:allocation');
  });

  it('nbd-client -l lists the export names', async () => {
    const r = await run('nbd-client', ['-l', '-unix', srv.socket]);
    expect(r.stdout + r.stderr).toContain('disk');
    expect(r.stdout + r.stderr).toContain('other');
  });
});
