// `nbd info` against libnbd's nbdinfo on the same servers (nbdkit, qemu-nbd, our
// own `nbd serve`): the JSON equal key for key and value for value, the text equal
// line for line, the map and totals equal, --size and --can/--is with the same answers.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNbdUri } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { type Peer, run, runOk, startNbdkit, startNbdServer, startQemuNbd } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { NBD_SHELL, nbd, nbdOk, startNbdServe } from './support.js';

const s = scoped('nbd-cli-info-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** Both tools' output for the same arguments. */
async function both(args: string[], uri: string): Promise<{ ours: string; theirs: string }> {
  const [ours, theirs] = await Promise.all([nbdOk(['info', ...args, uri]), runOk('nbdinfo', [...args, uri])]);
  return { ours: ours.stdout, theirs };
}

async function sameJson(args: string[], uri: string): Promise<unknown> {
  const { ours, theirs } = await both(['--json', ...args], uri);
  const a = JSON.parse(ours) as unknown;
  expect(a).toEqual(JSON.parse(theirs));
  return a;
}

describe('nbd info matches nbdinfo', () => {
  test('nbdkit memory, read-only pattern, blocksize filter, a named export, no structured replies, oldstyle: JSON and text', async () => {
    const servers = [
      await peer(startNbdkit(['memory', '64M'])),
      await peer(startNbdkit(['pattern', '1M'], ['-r'])),
      await peer(startNbdkit(['--filter=blocksize', 'memory', '1M'], ['-e', 'disk one'], 'disk one')),
      await peer(startNbdkit(['memory', '1M'], ['--no-sr'])),
      await peer(startNbdkit(['memory', '1M'], ['-o'])),
    ];
    for (const p of servers) {
      const doc = (await sameJson([], p.uri)) as { exports: Record<string, unknown>[] };
      expect(Object.keys(doc.exports[0]!)).toContain('export-size');
      const { ours, theirs } = await both([], p.uri);
      expect(ours).toBe(theirs);
    }
  });

  test('our own server: several exports, --list, descriptions, read-only, block sizes', async () => {
    const dir = s.tmp();
    writeFileSync(join(dir, 'disk.img'), Buffer.alloc(3 << 20, 1));
    const ours = await peer(
      startNbdServe(['-e', 'mem', '-D', 'scratch space', 'memory', '16M', '-e', 'img', 'file', join(dir, 'disk.img')], 'mem'),
    );
    await sameJson([], ours.uri);
    await sameJson(['--list'], ours.uri);
    const list = await both(['--list'], ours.uri);
    expect(list.ours).toBe(list.theirs);
    expect(list.ours).toContain('description: scratch space');
    const ro = await peer(startNbdServe(['-r', 'memory', '1M']));
    const doc = (await sameJson([], ro.uri)) as { exports: { is_read_only: boolean }[] };
    expect(doc.exports[0]!.is_read_only).toBe(true);
  });

  test('nbdkit with several exports (exportname filter): --list, text and JSON', async () => {
    const p = await peer(
      startNbdkit(['--filter=exportname', 'memory', '1M', 'exportname=a', 'exportname=b', 'exportdesc=fixed:hello'], []),
    );
    await sameJson(['--list'], p.uri);
    const { ours, theirs } = await both(['--list'], p.uri);
    expect(ours).toBe(theirs);
  });

  test('the reference nbd-server: the export and --list (its INFO says size 0, as nbdinfo shows too)', async () => {
    const dir = s.tmp();
    writeFileSync(join(dir, 'disk.img'), Buffer.alloc(4 << 20, 7));
    const p = await peer(startNbdServer({ disk: { file: join(dir, 'disk.img') }, ro: { file: join(dir, 'disk.img'), readOnly: true } }));
    await sameJson([], p.uri);
    await sameJson(['--list'], p.uri);
    const { ours, theirs } = await both(['--list'], p.uri);
    expect(ours).toBe(theirs);
  });

  test('--map, --map --totals, text and JSON, on a sparse nbdkit export', async () => {
    const p = await peer(startNbdkit(['data', '@1048576 1 @4194304 ( 2 )*65536 @12582912 3', 'size=16M']));
    for (const args of [['--map'], ['--map', '--totals'], ['--map', '--json'], ['--map', '--totals', '--json']]) {
      const { ours, theirs } = await both(args, p.uri);
      expect(ours, args.join(' ')).toBe(theirs);
    }
    const runs = JSON.parse((await nbdOk(['info', '--map', '--json', p.uri])).stdout) as { type: number }[];
    expect(runs.length).toBeGreaterThan(3); // data and holes alternate
  });

  test('qemu-nbd: base:allocation and qemu:allocation-depth maps, contexts in the JSON', async () => {
    const dir = s.tmp();
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    await runOk('qemu-img', ['create', '-f', 'qcow2', base, '8M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', base]);
    await runOk('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 4M 1M', top]);
    const p = await peer(startQemuNbd(top, ['-f', 'qcow2', '-A']));
    const doc = (await sameJson([], p.uri)) as { exports: { contexts: string[] }[] };
    expect(doc.exports[0]!.contexts).toContain('qemu:allocation-depth');
    for (const args of [['--map'], ['--map=qemu:allocation-depth'], ['--map=qemu:allocation-depth', '--totals']]) {
      const { ours, theirs } = await both(args, p.uri);
      expect(ours, args.join(' ')).toBe(theirs);
    }
  });

  test('--size and --can/--is answer as nbdinfo does (exit 0 yes, 2 no)', async () => {
    const rw = await peer(startNbdkit(['memory', '1M']));
    const ro = await peer(startNbdServe(['-r', 'memory', '3M']));
    for (const p of [rw, ro]) {
      expect((await nbdOk(['info', '--size', p.uri])).stdout).toBe(await runOk('nbdinfo', ['--size', p.uri]));
      const features = [
        'connect',
        'read',
        'write',
        'read-only',
        'rotational',
        'tls',
        'structured',
        'cache',
        'df',
        'fast-zero',
        'flush',
        'fua',
        'multi-conn',
        'trim',
        'zero',
      ];
      await Promise.all(
        features.map(async (f) => {
          const flag = f === 'read-only' || f === 'rotational' ? '--is' : '--can';
          const [ours, theirs] = await Promise.all([nbd(['info', flag, f, p.uri]), run('nbdinfo', [flag, f, p.uri])]);
          expect({ f, code: ours.code }).toEqual({ f, code: theirs.code });
          expect(ours.stdout + ours.stderr).toBe('');
        }),
      );
    }
  });

  test('refusals and mistakes: one line, no stack, exit 1 or 2', async () => {
    const p = await peer(startNbdServe(['-e', 'disk', 'memory', '1M'], 'disk'));
    const refused = await nbd(['info', p.uri.replace('/disk?', '/nope?')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^nbd info: NBD_OPT_(INFO|GO) refused: ERR_UNKNOWN/);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    const badMap = await nbd(['info', '--map=nope:nothing', p.uri]);
    expect(badMap.code).toBe(1);
    expect(badMap.stderr).toMatch(/does not support the metadata context "nope:nothing"/);
    const badCan = await nbd(['info', '--can', 'fly', p.uri]);
    expect(badCan.code).toBe(1);
    expect(badCan.stderr).toMatch(/unknown --can or --is feature 'fly'/);
    for (const args of [['--list', '--size'], ['--totals'], ['--content', '--no-content']]) {
      const r = await nbd(['info', ...args, p.uri]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});

describe('nbd info URIs', () => {
  test('an IPv6 address with a zone id: $uri and the uri nbd info prints escape it (RFC 6874 %25) and parse back', async () => {
    // ::1%lo is on every Linux; a link-local fe80::…%eth0 is written the same way (packages/cli/src/uris.test.ts).
    const script = `${NBD_SHELL} info --json "$uri" && ${NBD_SHELL} info --size "$(${NBD_SHELL} info --json "$uri" | grep -o 'nbd://[^"]*')"`;
    const r = await nbdOk(['serve', '-p', '0', '-i', '::1%lo', 'memory', '1M', '--run', script]);
    const [json, size] = r.stdout.split(/\n(?=\d+\n$)/);
    const uri = (JSON.parse(json!) as { exports: { uri: string }[] }).exports[0]!.uri;
    expect(uri).toMatch(/^nbd:\/\/\[::1%25lo\]:\d+\/$/);
    expect(parseNbdUri(uri)).toMatchObject({ transport: 'tcp', host: '::1%lo', exportName: '' });
    expect(size).toBe('1048576\n');
  });
});
