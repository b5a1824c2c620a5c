import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, NbdAbortError, NbdErrnoError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { afterAll, describe, expect, it } from 'vitest';
import { eio, fill, io, StrictDevice, zio } from '../../test/devices.js';
import { NullDevice } from '../sources/null-device.js';
import { cache } from './cache.js';
import { delay } from './delay.js';
import { injectErrors } from './inject-errors.js';
import { type LogEntry, log } from './log.js';
import { openDevice } from './open-stack.js';
import { rateLimit } from './rate-limit.js';
import { readahead } from './readahead.js';
import { retry } from './retry.js';
import { stats } from './stats.js';

const tmp = mkdtempSync(join(tmpdir(), 'nbd-filters-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const MiB = 1024 * 1024;
const reads = (d: StrictDevice) => d.calls.filter((c) => c.op === 'read').length;

describe('stats', () => {
  it('counts ops, bytes, errors and time per command, shared with a worker-thread copy', async () => {
    const base = injectErrors(new NullDevice(MiB), { commands: { cache: { rate: 1 } } });
    const dev = stats(base, { file: join(tmp, 'stats.json') });
    await dev.writeAt!(new Uint8Array(4096), 0, io);
    await dev.readAt(new Uint8Array(1024), 512, io);
    await dev.readAt(new Uint8Array(515), 0, io);
    await expect(async () => dev.cache!(0, 3, io)).rejects.toThrow(NbdErrnoError);
    await dev.sync!(io);
    const copy = await openDevice(structuredClone(dev.share!().args));
    await copy.trim!(0, 4096, io);
    const s = dev.stats();
    expect(s.commands.read).toMatchObject({ ops: 2, bytes: 1539, errors: 0 });
    expect(s.commands.cache).toMatchObject({ ops: 1, bytes: 3, errors: 1 });
    expect(s.commands.write).toMatchObject({ ops: 1, bytes: 4096, errors: 0 });
    expect(s.commands.trim.ops).toBe(1); // counted by the copy, seen here
    expect(s.total.ops).toBe(6);
    expect(s.commands.read.seconds).toBeGreaterThan(0);
    await dev.close!();
    expect(JSON.parse(readFileSync(join(tmp, 'stats.json'), 'utf8')).commands.flush.ops).toBe(1);
  });
});

describe('log', () => {
  it('writes one JSON line per call, with flags and the errno of failures', async () => {
    const entries: LogEntry[] = [];
    const dev = log(new StrictDevice(MiB, 512), { sink: (e) => entries.push(e) });
    await dev.writeAt!(new Uint8Array(512), 1024, { ...io, fua: true });
    await dev.zero!(0, 512, zio({ noHole: true }));
    await expect(async () => dev.trim!(1, 1, io)).rejects.toThrow();
    expect(entries.map((e) => [e.id, e.command, e.offset, e.length, e.flags, e.error])).toEqual([
      [1, 'write', 1024, 512, ['fua'], undefined],
      [2, 'zero', 0, 512, ['noHole'], undefined],
      [3, 'trim', 1, 1, [], 'EINVAL'],
    ]);
    const file = join(tmp, 'log.jsonl');
    const f = log(new StrictDevice(MiB), { file });
    await f.extents!(0, 4096, eio(true));
    await f.close!();
    expect(JSON.parse(readFileSync(file, 'utf8').trim())).toMatchObject({ command: 'extents', flags: ['reqOne'] });
    expect(() => log(new StrictDevice(1), {})).toThrow(/exactly one/);
  });
});

describe('injectErrors', () => {
  it('fails the commands asked, at the rate asked, with the errno asked, while the file exists', async () => {
    const trigger = join(tmp, 'inject');
    const dev = injectErrors(new StrictDevice(MiB), {
      commands: { write: { rate: 1, errno: 'ENOSPC' }, read: { rate: 0.5, file: trigger } },
      seed: 1,
    });
    await expect(async () => dev.writeAt!(new Uint8Array(1), 0, io)).rejects.toMatchObject({ errno: Errno.ENOSPC });
    for (let i = 0; i < 50; i++) await dev.readAt(new Uint8Array(1), 0, io); // no trigger file: no errors
    writeFileSync(trigger, '');
    let failed = 0;
    for (let i = 0; i < 400; i++) {
      try {
        await dev.readAt(new Uint8Array(1), 0, io);
      } catch (e) {
        expect((e as NbdErrnoError).errno).toBe(Errno.EIO);
        failed++;
      }
    }
    expect(failed).toBeGreaterThan(150);
    expect(failed).toBeLessThan(250);
    await dev.trim!(0, 1, io);
    expect(() => injectErrors(new StrictDevice(1), { errno: 'EBADF' as never })).toThrow(/not an NBD errno/);
    expect(() => injectErrors(new StrictDevice(1), { rate: 2 })).toThrow(/0..1/);
  });
});

describe('delay', () => {
  it('waits before the commands asked, ends early on abort, and can refuse fast zero at once', async () => {
    const dev = delay(new StrictDevice(MiB), { read: 60, fastZero: false });
    let t = performance.now();
    await dev.readAt(new Uint8Array(1), 0, io);
    expect(performance.now() - t).toBeGreaterThanOrEqual(55);
    t = performance.now();
    await dev.writeAt!(new Uint8Array(1), 0, io);
    expect(performance.now() - t).toBeLessThan(30);
    const ac = new AbortController();
    const p = dev.readAt(new Uint8Array(1), 0, { fua: false, signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(NbdAbortError);
    expect(() => dev.zero!(0, 1, zio({ fast: true }))).toThrow(/fast zero/);
  });
});

describe('rateLimit', () => {
  it('holds reads to the rate after the burst', async () => {
    const dev = rateLimit(new StrictDevice(MiB), { read: 400 * 1024, burst: 0 });
    const t = performance.now();
    for (let i = 0; i < 5; i++) await dev.readAt(new Uint8Array(40 * 1024), 0, io);
    const ms = performance.now() - t;
    // 200 KiB at 400 KiB/s: the first read passes, the others wait ~100 ms each.
    expect(ms).toBeGreaterThan(350);
    expect(ms).toBeLessThan(1500);
    expect(() => rateLimit(new StrictDevice(1), {})).toThrow(/give rate/);
  });
});

describe('retry', () => {
  it('retries transient errors with a growing delay, on a reopened device when asked', async () => {
    let failures = 2;
    const flaky: Device = {
      size: 10,
      readAt: () => {
        if (failures-- > 0) throw new NbdErrnoError(Errno.EIO, 'flaky');
      },
    };
    const dev = retry(flaky, { delay: 10 });
    await dev.readAt(new Uint8Array(1), 0, io);
    expect(failures).toBe(-1);
    const permanent = retry({ size: 1, readAt: () => Promise.reject(new NbdErrnoError(Errno.EINVAL, 'no')) }, { delay: 1 });
    await expect(permanent.readAt(new Uint8Array(1), 0, io)).rejects.toMatchObject({ errno: Errno.EINVAL });
    const opened: string[] = [];
    const broken: Device = {
      size: 1,
      readAt: () => Promise.reject(new Error('connection lost')),
      close: () => void opened.push('closed broken'),
    };
    const r = retry(broken, { delay: 1, reopen: () => (opened.push('reopened'), { size: 1, readAt: () => {} }) });
    await r.readAt(new Uint8Array(1), 0, io);
    expect(opened).toEqual(['reopened']);
    expect(r.share).toBeUndefined();
    const gaveUp = retry({ size: 1, readAt: () => Promise.reject(new Error('down')) }, { retries: 2, delay: 1 });
    await expect(gaveUp.readAt(new Uint8Array(1), 0, io)).rejects.toThrow('down');
  });
});

describe('cache and readahead', () => {
  it('serves repeated reads from memory, drops blocks on write, and evicts the least recently used', async () => {
    const base = new StrictDevice(4 * MiB, 512);
    base.mem.writeAt(fill(new Uint8Array(4 * MiB), 3), 0);
    const dev = cache(base, { maxSize: MiB });
    const a = new Uint8Array(100_000);
    await dev.readAt(a, 10_000, io);
    const n = reads(base);
    const b = new Uint8Array(100_000);
    await dev.readAt(b, 10_000, io);
    expect(reads(base)).toBe(n);
    expect(b).toEqual(a);
    await dev.writeAt!(new Uint8Array(512).fill(42), 19_968, io);
    await dev.readAt(b, 10_000, io);
    expect(reads(base)).toBe(n + 1);
    expect(b[10_000]).toBe(42);
    for (let at = 0; at < 4 * MiB; at += 64 * 1024) await dev.readAt(new Uint8Array(64 * 1024), at, io);
    expect(dev.cached).toBe(MiB);
    expect(dev.share).toBeUndefined();
  });

  it('readahead prefetches past sequential reads, and needs a device that can prefetch', async () => {
    const base = new StrictDevice(4 * MiB, 512);
    const dev = readahead(base);
    for (let at = 0; at < 256 * 1024; at += 32 * 1024) await dev.readAt(new Uint8Array(32 * 1024), at, io);
    await new Promise((r) => setTimeout(r, 10));
    const prefetched = base.calls.filter((c) => c.op === 'cache');
    expect(prefetched.length).toBeGreaterThan(2);
    expect(Math.max(...prefetched.map((c) => c.offset + c.length))).toBeGreaterThan(256 * 1024);
    expect(() => readahead({ size: 1, readAt: () => {} })).toThrow(/cannot prefetch/);
    const withCache = readahead(cache({ size: MiB, readAt: () => {} }));
    expect(withCache.cache).toBeTypeOf('function');
  });
});
