// `nbd serve` and `nbd info` with disk images: --format qcow2 (and the qcow2 word)
// serves the image inside, read-write; a file is raw unless its format is named (even
// one with a qcow2 header); --format auto probes and serves a probed raw image only
// read-only; a backing file is followed with --backing only; worker threads are
// refused; `nbd info FILE` reports the format as qemu-img info does.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { type Peer, run, runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { nbd, startNbdServe } from './support.js';

const s = scoped('nbd-cli-qcow2-');

async function serve(args: string[]): Promise<Peer> {
  const p = await startNbdServe(args);
  s.defer(() => p.stop());
  return p;
}

async function image(dir: string, name: string, extra: string[] = []): Promise<string> {
  const path = join(dir, name);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...extra, path, '16M']);
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 1M 1M', '-c', 'write -c -P 0x62 4M 256k', path]);
  return path;
}

describe('nbd serve with qcow2 images', () => {
  test('--format qcow2 file and the qcow2 word: the guest bytes, writable, check clean', async () => {
    const dir = s.tmp();
    const img = await image(dir, 'disk.qcow2');
    const p = await serve(['--format', 'qcow2', 'file', img]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', p.uri, img]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x63 100000 300000', '-c', 'discard 1M 512k', p.uri]);
    await p.stop();
    expect(await runOk('qemu-img', ['check', img])).toContain('No errors were found');
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x63 100000 300000', '-c', 'read -P 0 1M 512k', img]);
    const q = await serve(['-r', 'qcow2', img]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', q.uri, img]);
  });

  test('a file is raw unless its format is named, even with a qcow2 header', async () => {
    const dir = s.tmp();
    const img = await image(dir, 'disk.qcow2');
    const p = await serve(['-r', 'file', img]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', p.uri, img]);
  });

  test('--format auto: qcow2 probed; a probed raw image only read-only', async () => {
    const dir = s.tmp();
    const img = await image(dir, 'disk.qcow2');
    const p = await serve(['--format', 'auto', 'file', img]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', p.uri, img]);
    const raw = join(dir, 'disk.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    const r = await nbd(['serve', '-U', join(dir, 's.sock'), '--format', 'auto', 'file', raw]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has no qcow2 header: an image whose format was probed as raw is only served read-only/);
    const ro = await serve(['-r', '--format', 'auto', 'file', raw]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ro.uri, raw]);
  });

  test('a backing file is followed with --backing only; --no-backing serves the top alone', async () => {
    const dir = s.tmp();
    const base = join(dir, 'base.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'raw', base, '16M']);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x71 0 8M', base]);
    const top = join(dir, 'top.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top, '16M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x72 1M 64k', top]);
    const refused = await nbd(['serve', '-U', join(dir, 's.sock'), 'qcow2', top]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/has a backing file "base.raw"/);
    const followed = await serve(['--backing', 'qcow2', top]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', followed.uri, top]);
    const alone = await serve(['-r', '--no-backing', 'qcow2', top]);
    await runOk('qemu-img', [
      'compare',
      '-f',
      'raw',
      alone.uri,
      `json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"${top}"}}`,
    ]);
  });

  test('worker threads are refused (the metadata cache lives in one thread); a raw word with backing= is a usage error', async () => {
    const dir = s.tmp();
    const img = await image(dir, 'disk.qcow2');
    const t = await nbd(['serve', '-U', join(dir, 's.sock'), '-t', '2', 'qcow2', img]);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/qcow2 cannot be shared with worker threads/);
    const b = await nbd(['serve', '-U', join(dir, 's.sock'), 'file', img, 'backing=follow']);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/backing=follow needs a qcow2 image/);
  });
});

describe('nbd info FILE', () => {
  test('reports the format and the qcow2 header as qemu-img info does', async () => {
    const dir = s.tmp();
    const img = await image(dir, 'disk.qcow2', ['-o', 'cluster_size=128k,compression_type=zstd']);
    const ours = JSON.parse((await nbd(['info', '--json', img])).stdout) as Record<string, unknown>;
    const theirs = JSON.parse(await runOk('qemu-img', ['info', '--output=json', img])) as Record<string, unknown>;
    for (const key of ['virtual-size', 'format', 'cluster-size', 'format-specific', 'dirty-flag', 'actual-size'])
      expect(ours[key], key).toEqual(key === 'format-specific' ? pick(theirs[key]) : theirs[key]);
    const text = (await nbd(['info', img])).stdout;
    expect(text).toContain('file format: qcow2');
    expect(text).toContain('virtual size: 16 MiB (16777216 bytes)');
    const raw = join(dir, 'copy.raw');
    copyFileSync(img, raw);
    await run('truncate', ['-s', '0', raw]);
    expect((await nbd(['info', raw])).stdout).toContain('file format: raw');
  });
});

/** The format-specific fields both report (qemu adds bitmaps, data-file information, …). */
function pick(v: unknown): unknown {
  const o = v as { type: string; data: Record<string, unknown> };
  const keep = ['compat', 'compression-type', 'lazy-refcounts', 'refcount-bits', 'corrupt', 'extended-l2'];
  return { type: o.type, data: Object.fromEntries(keep.map((k) => [k, o.data[k]])) };
}
