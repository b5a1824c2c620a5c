// nbdcopy's options of `nbd copy`, each against what nbdcopy does with it on the same
// source: requests in flight (-R, --queue-size, --synchronous, counted in nbdkit's log
// filter), --sparse=N (what is left allocated), --no-extents, --target-is-zero, and
// client TLS from the command line (--tls-psk, --tls-certificates).
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Peer, runOk, startNbdkit, tempDir } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { type Credentials, makeCredentials } from '../support/tls.js';
import { nbd, nbdOk } from './support.js';

const s = scoped('nbd-cli-copy-options-');
const KiB = 1024;
const MiB = 1024 * KiB;

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** Most requests of `kind` in flight at once, and the connections that sent any, from nbdkit's log filter. */
function inFlight(log: string, kind: string): { most: number; connections: number } {
  let now = 0;
  let most = 0;
  const conns = new Set<string>();
  for (const line of log.split('\n')) {
    const start = new RegExp(`connection=(\\d+) ${kind} id=\\d+ .*\\.\\.\\.$`).exec(line);
    if (start) {
      conns.add(start[1]!);
      most = Math.max(most, ++now);
    } else if (line.includes(`...${kind} id=`)) now--;
  }
  return { most, connections: conns.size };
}

/** Runs `args` (ours: `nbd copy …`, theirs: `nbdcopy …`) from a fresh logged source; what nbdkit's log says. */
async function logged(tool: 'ours' | 'theirs', args: string[], plugin: string[]): Promise<string> {
  const dir = s.tmp();
  const log = join(dir, 'nbdkit.log');
  const src = await peer(startNbdkit(['--filter=log', '--filter=delay', ...plugin, 'rdelay=2ms', `logfile=${log}`]));
  if (tool === 'ours') await nbdOk(['copy', ...args, src.uri, 'null:']);
  else await runOk('nbdcopy', [...args, src.uri, 'null:']);
  return readFileSync(log, 'utf8');
}

describe('requests in flight, as nbdcopy sends them', () => {
  const cases: [string, string[], string[], { most: number; connections: number }][] = [
    ['--synchronous', ['--synchronous'], ['--synchronous'], { most: 1, connections: 1 }],
    ['-R 3 -C 1', ['-R', '3', '-C', '1'], ['-R', '3', '-C', '1'], { most: 3, connections: 1 }],
    [
      '--queue-size 1M --request-size 256K -C 1',
      ['--queue-size', '1M', '--request-size', '256K', '-C', '1'],
      ['--queue-size=1048576', '--request-size=262144', '-C', '1'],
      { most: 4, connections: 1 },
    ],
  ];
  for (const [name, ours, theirs, want] of cases) {
    test(name, async () => {
      const plugin = ['pattern', '16M'];
      expect(inFlight(await logged('ours', ours, plugin), 'Read')).toEqual(want);
      expect(inFlight(await logged('theirs', theirs, plugin), 'Read')).toEqual(want);
    });
  }

  test('--no-extents: no block status asked for, by either', async () => {
    const plugin = ['sparse-random', '16M', 'seed=2'];
    for (const tool of ['ours', 'theirs'] as const) {
      expect(await logged(tool, [], plugin)).toMatch(/ Extents id=/);
      expect(await logged(tool, ['--no-extents'], plugin)).not.toMatch(/ Extents id=/);
    }
  });
});

describe('--sparse=N and --target-is-zero', () => {
  test('zero blocks of N bytes are left as holes in a new file, as nbdcopy leaves them', async () => {
    const dir = s.tmp();
    const src = join(dir, 'src.img');
    const data = Buffer.alloc(8 * MiB); // every 64K: 4K of data, then 60K of zeroes written out
    for (let at = 0; at < data.length; at += 64 * KiB) data.fill((at >> 16) | 1, at, at + 4 * KiB);
    writeFileSync(src, data);
    const allocated = (p: string) => statSync(p).blocks * 512;
    for (const [sparse, most] of [
      [undefined, MiB], // the default: 4K blocks, as nbdcopy's
      ['4096', MiB],
      ['65536', 8 * MiB], // every 64K block holds data
      ['0', 8 * MiB],
    ] as const) {
      const ours = join(dir, `ours-${sparse}`);
      const theirs = join(dir, `theirs-${sparse}`);
      await nbdOk(['copy', ...(sparse === undefined ? [] : ['--sparse', sparse]), src, ours]);
      await runOk('nbdcopy', [...(sparse === undefined ? [] : [`--sparse=${sparse}`]), src, theirs]);
      expect(readFileSync(ours).equals(data)).toBe(true);
      // The same holes (within a file system block or two of metadata).
      expect(Math.abs(allocated(ours) - allocated(theirs)), `--sparse=${sparse}`).toBeLessThanOrEqual(8 * KiB);
      expect(allocated(ours)).toBeLessThanOrEqual(most);
    }
    const bad = await nbd(['copy', '-S', '1000', src, 'null:']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--sparse: 1000 is not 0 nor a power of two of at least 512 bytes/);
  });

  test('--target-is-zero skips zero ranges: what the destination held there stays, as with nbdcopy', async () => {
    const src = await peer(startNbdkit(['sparse-random', '8M', 'seed=4', 'percent=30']));
    const held = new Map<string, Buffer>();
    for (const tool of ['ours', 'theirs'] as const) {
      const dst = await peer(startNbdkit(['--filter=noextents', 'data', '0xee*8388608']));
      if (tool === 'ours') await nbdOk(['copy', '--target-is-zero', src.uri, dst.uri]);
      else await runOk('nbdcopy', ['--target-is-zero', src.uri, dst.uri]);
      const out = join(s.tmp(), 'out');
      await runOk('nbdcopy', [dst.uri, out]);
      held.set(tool, readFileSync(out));
    }
    expect(held.get('ours')!.includes(0xee)).toBe(true);
    expect(held.get('ours')!.equals(held.get('theirs')!)).toBe(true);
  });
});

describe('client TLS on the command line', () => {
  const tmp = tempDir('nbd-cli-copy-tls-');
  let creds: Credentials;
  beforeAll(async () => {
    creds = await makeCredentials(tmp.dir);
  }, 60_000);
  afterAll(() => tmp.cleanup());

  test('--tls-psk and --tls-username; --tls-certificates with the URI naming the host', async () => {
    const psk = join(creds.dir, 'keys.psk');
    const p = await peer(startNbdkit(['pattern', '4M'], ['--tls=require', `--tls-psk=${psk}`]));
    const plain = await nbd(['copy', p.uri, 'null:']);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/TLS/);
    const ok = await nbdOk(['copy', '--json', '--tls-psk', psk, '--tls-username', 'alice', p.uri, 'null:']);
    expect(JSON.parse(ok.stdout)).toMatchObject({ bytes: 4 * MiB });
    await runOk('nbdcopy', [`nbds+unix://alice@/?socket=${p.socket}&tls-psk-file=${psk}`, 'null:']);

    const x = await peer(startNbdkit(['pattern', '4M'], ['--tls=require', `--tls-certificates=${creds.dir}`]));
    const named = `${x.uri}&tls-hostname=localhost`;
    await nbdOk(['copy', '--tls-certificates', creds.dir, named, 'null:']);
    const untrusted = await nbd(['copy', '--tls-certificates', creds.otherCa, named, 'null:']);
    expect(untrusted.code).toBe(1);
    await nbdOk(['copy', '--tls-certificates', creds.otherCa, '--tls-verify-peer=no', named, 'null:']);
    const both = await nbd(['copy', '--tls-psk', psk, '--tls-certificates', creds.dir, named, 'null:']);
    expect(both.code).toBe(2);
  });
});
