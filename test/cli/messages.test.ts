// What a newcomer reads when something is wrong: one sentence on stderr that says
// what is wrong in the terms they typed (offset=, round-up=, --ioctl), which side
// refused a TLS handshake and why, an errno named once, and the file or address a
// system call failed on. Each row is the whole line, so a changed word shows.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import type { Peer } from '../support/peers.js';
import { QEMU_7_2, startQemuNbdOf } from '../support/qemu.js';
import { scoped } from '../support/scoped.js';
import { NBD_SHELL, nbd, startNbdServe } from './support.js';

const s = scoped('nbd-cli-messages-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** Runs each row and checks its exit code and its one stderr line. */
async function expectLines(rows: [string[], number, string][]): Promise<void> {
  for (const [args, code, line] of rows) {
    const r = await nbd(args, { timeout: 20_000 });
    expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code, stderr: `${line}\n` });
  }
}

/** `nbd serve` that would exit at once if it started (so a wrongly accepted row cannot hang). */
const serve = (...args: string[]) => ['serve', '-U', '-', ...args, '--run', 'true'];

test('filters: the parameter as typed and what is wrong with it, never a number the user did not give', async () => {
  const errnos = 'EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN';
  await expectLines([
    [
      serve('--filter', 'offset', 'memory', '1G', 'offset=2G'),
      1,
      'nbd serve: offset=2147483648 is past the end of the 1073741824-byte device below',
    ],
    [
      serve('--filter', 'offset', 'memory', '1G', 'range=2G'),
      1,
      'nbd serve: range=2147483648 is larger than the 1073741824-byte device below',
    ],
    [
      serve('--filter', 'offset', 'memory', '1G', 'offset=512M', 'range=1G'),
      1,
      'nbd serve: range=1073741824 from offset 536870912 ends at byte 1610612736, past the end of the 1073741824-byte device below',
    ],
    [serve('--filter', 'truncate', 'memory', '1G', 'round-up=3'), 1, 'nbd serve: round-up=3 is not a power of two'],
    [
      serve('--filter', 'truncate', 'memory', '1G'),
      2,
      "nbd serve: --filter truncate needs one of truncate=SIZE, round-up=N, round-down=N (see 'nbd serve --help')",
    ],
    [serve('--filter', 'blocksize', 'memory', '1G', 'minblock=3'), 1, 'nbd serve: minblock=3 is not a power of two up to 64 KiB'],
    [
      serve('--filter', 'cache', 'memory', '1G', 'cache-min-block-size=3'),
      1,
      'nbd serve: cache-min-block-size=3 is not a power of two ≥ 4096',
    ],
    [serve('--filter', 'cow', 'memory', '1G', 'cow-block-size=3'), 1, 'nbd serve: cow-block-size=3 is not a power of two ≥ 4096'],
    [
      serve('--filter', 'readahead', '--filter', 'cache', 'memory', '1G', 'readahead-min=2M', 'readahead-max=1M'),
      1,
      'nbd serve: readahead-max=1048576 is smaller than the first window (2097152 bytes)',
    ],
    [serve('--filter', 'error', 'memory', '1G', 'error=EFOO'), 1, `nbd serve: error=EFOO is not an NBD errno (${errnos})`],
    [serve('--filter', 'error', 'memory', '1G', 'error-pread=EFOO'), 1, `nbd serve: error-pread=EFOO is not an NBD errno (${errnos})`],
    [
      serve('--filter', 'rate', 'memory', '1G'),
      2,
      "nbd serve: --filter rate needs rate=BITS, read-rate=BITS or write-rate=BITS (see 'nbd serve --help')",
    ],
    [
      serve('--filter', 'partition', 'memory', '1G', 'partition=1'),
      1,
      'nbd serve: the disk has no partition table (no MBR boot signature 0x55 0xaa at byte 510)',
    ],
  ]);
});

test('an errno is named once, with its meaning: nbd info, nbd copy and the server log', async () => {
  const p = await peer(startNbdServe(['-v', '--filter', 'error', 'memory', '1M', 'error=EIO', 'error-rate=1']));
  const info = await nbd(['info', '--map', p.uri]);
  expect(info).toMatchObject({ code: 1, stderr: 'nbd info: EIO (Input/output error): injected error (extents at 0)\n' });
  const copy = await nbd(['copy', p.uri, 'null:']);
  expect(copy.code).toBe(1);
  expect(copy.stderr).toMatch(/EIO \(Input\/output error\): injected error \((extents|read) at 0\)\n$/);
  for (const text of [info.stderr, copy.stderr, p.log()]) expect(text).not.toMatch(/E[A-Z]+: E[A-Z]+:|EIO[^\n]*EIO/);
  expect(p.log()).toMatch(/failed: EIO \(Input\/output error\): injected error/);
});

describe('a refused PSK handshake says which side refused and the likely cause', () => {
  /** keys.psk for alice (the server's), the same user with another key, and an unknown user. */
  function keys(): { dir: string; key: string; good: string; wrongKey: string; unknownUser: string } {
    const dir = s.tmp();
    const file = (name: string, line: string) => {
      writeFileSync(join(dir, name), `${line}\n`);
      return join(dir, name);
    };
    const key = randomBytes(32).toString('hex');
    return {
      dir,
      key,
      good: file('keys.psk', `alice:${key}`),
      wrongKey: file('wrong-key.psk', `alice:${randomBytes(32).toString('hex')}`),
      unknownUser: file('bob.psk', `bob:${key}`),
    };
  }
  const uri = (server: Peer, user: string, file: string) => `nbds+unix://${user}@/?socket=${server.socket}&tls-psk-file=${file}`;

  test('our server: the client says the server refused its key or its user; the server log says it refused, and why', async () => {
    const k = keys();
    const server = await peer(startNbdServe(['-v', '--tls-psk', k.good, 'memory', '1M']));
    await expectLines([
      [
        ['info', uri(server, 'alice', k.wrongKey)],
        1,
        `nbd info: the server refused TLS: its key for PSK user "alice" is not the one in ${k.wrongKey} (a wrong key)`,
      ],
      [
        ['info', uri(server, 'bob', k.unknownUser)],
        1,
        'nbd info: the server refused TLS (alert "handshake failure"): it has no key for PSK user "bob" (a wrong username?)',
      ],
    ]);
    expect(server.log()).toMatch(
      /^nbd serve: \S+: refused TLS: the client's key for PSK user "alice" is not ours \(a wrong key on the client\); closing$/m,
    );
    expect(server.log()).toMatch(
      /^nbd serve: \S+: refused TLS: PSK user "bob" is not in our keys \(a wrong username on the client\?\); closing$/m,
    );
    expect(server.log()).not.toMatch(/SSL routines/);
  });

  test('nbdkit --tls=require --tls-psk and qemu-nbd with a tls-creds-psk object hang up without a word: the client gives both causes', async () => {
    const k = keys();
    const qemuDir = join(k.dir, 'qemu');
    mkdirSync(qemuDir);
    writeFileSync(join(qemuDir, 'keys.psk'), `alice:${k.key}\n`);
    const image = join(k.dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(1 << 20));
    const servers = [
      await peer(s.nbdkit(['--tls=require', `--tls-psk=${k.good}`, 'memory', '1M'])),
      await peer(
        startQemuNbdOf(QEMU_7_2, image, [
          '-f',
          'raw',
          '--object',
          `tls-creds-psk,id=tls0,endpoint=server,dir=${qemuDir}`,
          '--tls-creds',
          'tls0',
        ]),
      ),
    ];
    for (const server of servers)
      await expectLines([
        [
          ['info', uri(server, 'alice', k.wrongKey)],
          1,
          `nbd info: the server closed the connection during the TLS handshake: a wrong PSK key or username? (PSK user "alice", key from ${k.wrongKey})`,
        ],
        [
          ['info', uri(server, 'bob', k.unknownUser)],
          1,
          `nbd info: the server closed the connection during the TLS handshake: a wrong PSK key or username? (PSK user "bob", key from ${k.unknownUser})`,
        ],
      ]);
  });
});

test('wrong input a newcomer types: one sentence each, naming the file, address, export or word', async () => {
  const dir = s.tmp();
  const taken = await peer(startNbdServe(['-e', 'disk', 'memory', '1M']));
  const port = await nbd(['serve', '-p', '0', '-i', '127.0.0.1', 'memory', '1M', '--run', 'echo $port']);
  await expectLines([
    [
      ['info', 'disk.img'],
      2,
      "nbd info: 'disk.img' is not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH) (see 'nbd info --help')",
    ],
    [
      ['info', `nbd+unix:///?socket=${join(dir, 'none.sock')}`],
      1,
      `nbd info: cannot connect to ${join(dir, 'none.sock')}: no such socket (ENOENT)`,
    ],
    [
      ['info', `nbd://127.0.0.1:${port.stdout.trim()}/`],
      1,
      `nbd info: cannot connect to 127.0.0.1:${port.stdout.trim()}: nothing is listening there (ECONNREFUSED)`,
    ],
    [
      ['info', taken.uri.replace('/?', '/nope?')],
      1,
      `nbd info: NBD_OPT_INFO refused: ERR_UNKNOWN: unknown export "nope" (the server has no such export; 'nbd info --list' shows the ones it has)`,
    ],
    [
      ['serve', 'file', join(dir, 'missing.img')],
      1,
      `nbd serve: cannot open ${join(dir, 'missing.img')}: no such file or directory (ENOENT)`,
    ],
    [['serve', 'file', dir], 1, `nbd serve: cannot open ${dir}: it is a directory (EISDIR)`],
    [
      ['serve', '-U', taken.socket, 'memory', '1M'],
      1,
      `nbd serve: cannot listen on ${taken.socket}: address already in use (EADDRINUSE); another server listens on this socket`,
    ],
    [
      ['serve', '-U', join(dir, 'no/such/dir/sock'), 'memory', '1M'],
      1,
      `nbd serve: cannot listen on ${join(dir, 'no/such/dir/sock')}: the directory ${join(dir, 'no/such/dir')} does not exist`,
    ],
    [
      ['serve', 'memory', '1Q'],
      2,
      "nbd serve: memory: bad size '1Q': unknown suffix 'Q' (use K, M, G, T, P or E, or s for 512-byte sectors) (see 'nbd serve --help')",
    ],
    [['serve', 'memory', '-1'], 2, "nbd serve: unknown option '-1': sizes and counts cannot be negative (see 'nbd serve --help')"],
    [
      ['serve', 'memroy', '1G'],
      2,
      "nbd serve: unknown device 'memroy' (devices: memory, sparse-memory, file, qcow2, null, zero, pattern, random, sparse-random, data, http, curl) (see 'nbd serve --help')",
    ],
    [['serve', 'memory', '1G', 'colour=blue'], 2, "nbd serve: unknown parameter colour= for memory (see 'nbd serve --help')"],
    [
      ['serve', '--tls-psk', join(dir, 'none.psk'), 'memory', '1M'],
      1,
      `nbd serve: cannot open ${join(dir, 'none.psk')}: no such file or directory (ENOENT)`,
    ],
    [
      ['serve', '--tls-certificates', dir, 'memory', '1M'],
      2,
      `nbd serve: TLS: ${dir} has no server-cert.pem and server-key.pem (a server needs its certificate and key there) (see 'nbd serve --help')`,
    ],
  ]);
});

test("sources: a device's option by its parameter name, a data string's fault with where it is", async () => {
  await expectLines([
    [serve('sparse-random', '1M', 'runlength=0'), 1, 'nbd serve: runlength=0 is not a length of 1 byte or more'],
    [
      serve('data', '1x2'),
      1,
      'nbd serve: data format: at character 1, "1x2" is not a number (decimal, 0-prefixed octal or 0x-prefixed hex)',
    ],
    [serve('data', '1 2 (3'), 1, 'nbd serve: data format: at character 7, a ")" is missing'],
  ]);
});

test('a port in use is named, with what to do', async () => {
  // The second server, run by the first's --run, finds the first's port taken.
  const first = await nbd([
    'serve',
    '-p',
    '0',
    '-i',
    '127.0.0.1',
    'memory',
    '1M',
    '--run',
    `${NBD_SHELL} serve -p "$port" -i 127.0.0.1 memory 1M`,
  ]);
  expect(first.code).toBe(1);
  expect(first.stderr).toMatch(
    /^nbd serve: cannot listen on 127\.0\.0\.1:\d+: address already in use \(EADDRINUSE\); another server has this port \(-p 0 picks a free one\)\n$/,
  );
});
