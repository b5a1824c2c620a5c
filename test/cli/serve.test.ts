// `nbd serve` as nbdkit users drive it: real clients (qemu-img, qemu-io, nbdinfo,
// nbdcopy) read and write what it serves; --run is captive and returns the command's
// exit code; -U - makes a private socket; --print-uri, several exports, TLS, -v.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { PATH, type Peer, run, runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { makeCredentials } from '../support/tls.js';
import { NBD_BIN, nbd, nbdOk, startNbdServe } from './support.js';

const s = scoped('nbd-cli-serve-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

function patterned(path: string, size: number): Buffer {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 512) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(path, data);
  return data;
}

describe('nbd serve', () => {
  test('qemu-img compare reads what `nbd serve file X` serves (one thread and worker threads); qemu-io writes reach the file', async () => {
    const dir = s.tmp();
    const img = join(dir, 'disk.img');
    patterned(img, 8 << 20);
    for (const extra of [[], ['-t', '2']]) {
      const p = await peer(startNbdServe([...extra, 'file', img]));
      await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, p.uri]);
    }
    const rw = await peer(startNbdServe(['file', img]));
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', '-c', 'flush', rw.uri]);
    expect(
      readFileSync(img)
        .subarray(1 << 20, (1 << 20) + 65536)
        .every((b) => b === 0xab),
    ).toBe(true);
  });

  test('-o (oldstyle) on one thread and on worker threads: nbdinfo and nbdcopy read it', async () => {
    for (const extra of [[], ['-t', '2']]) {
      const r = await nbdOk([
        'serve',
        '-o',
        ...extra,
        '-U',
        '-',
        'pattern',
        '1M',
        '--run',
        'nbdinfo --size "$uri" && nbdcopy "$uri" null: && echo copied',
      ]);
      expect(r.stdout).toBe('1048576\ncopied\n');
    }
  });

  test("--run is captive: $uri reaches the server, the command's exit code is ours, -U - is removed afterwards", async () => {
    const ok = await nbd(['serve', '-U', '-', 'memory', '1G', '--run', 'nbdinfo "$uri" >/dev/null && echo "$unixsocket" && exit 7']);
    expect(ok.code).toBe(7);
    const socket = ok.stdout.trim();
    expect(socket).toMatch(/\/socket$/);
    expect(existsSync(socket)).toBe(false);
    const ro = await nbd(['serve', '-U', '-', '-r', 'memory', '1M', '--run', 'nbdinfo --can write "$uri"']);
    expect(ro.code).toBe(2); // nbdinfo's "no"
    const vars = await nbdOk(['serve', '-U', '-', '-e', 'disk', 'memory', '1M', '--run', 'echo "$uri|$nbd|$exportname|$port"']);
    const [uri, nbdVar, exportname, port] = vars.stdout.trim().split('|');
    expect(uri).toMatch(/^nbd\+unix:\/\/\/disk\?socket=\/.*\/socket$/);
    expect(nbdVar).toBe(uri);
    expect(exportname).toBe('disk');
    expect(port).toBe('');
    const tcp = await nbdOk(['serve', '-p', '0', '-i', '127.0.0.1', 'memory', '1M', '--run', 'nbdinfo --size "$uri"; echo "$port"']);
    const [size, tcpPort] = tcp.stdout.trim().split('\n');
    expect(size).toBe('1048576');
    expect(Number(tcpPort)).toBeGreaterThan(0);
  });

  test('--print-uri on -p 0, several exports with --list, SIGTERM ends it with 0', async () => {
    const child = spawn(
      process.execPath,
      [NBD_BIN, 'serve', '-p', '0', '-i', '127.0.0.1', '--print-uri', '-e', 'a', 'memory', '1M', '-e', 'b', '-D', 'second', 'memory', '2M'],
      {
        env: { ...process.env, PATH },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    s.defer(() => void child.kill('SIGKILL'));
    const uri = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
    expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/a$/);
    const list = await runOk('nbdinfo', ['--list', '--json', uri]);
    const doc = JSON.parse(list) as { exports: { 'export-name': string; 'export-size': number; description?: string }[] };
    expect(doc.exports.map((e) => [e['export-name'], e['export-size']])).toEqual([
      ['a', 1 << 20],
      ['b', 2 << 20],
    ]);
    expect(doc.exports[1]!.description).toBe('second');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  test('TLS: X.509 and PSK as nbdkit takes them; plaintext clients are refused', async () => {
    const creds = await makeCredentials(s.tmp());
    const x509 = await peer(startNbdServe(['--tls-certificates', creds.dir, 'memory', '1M']));
    const sock = x509.socket;
    expect(await runOk('nbdinfo', ['--size', `nbds+unix:///?socket=${sock}&tls-certificates=${creds.dir}`])).toBe('1048576\n');
    expect((await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`])).code).not.toBe(0);
    const psk = await peer(startNbdServe(['--tls=require', '--tls-psk', join(creds.dir, 'keys.psk'), 'memory', '2M']));
    expect(await runOk('nbdinfo', ['--size', `nbds+unix://alice@/?socket=${psk.socket}&tls-psk-file=${join(creds.dir, 'keys.psk')}`])).toBe(
      '2097152\n',
    );
    const r = await nbd(['serve', '-U', '-', '--tls-certificates', creds.dir, 'memory', '1M', '--run', 'echo "$uri $tls"']);
    expect(r.stdout).toMatch(/^nbds\+unix:\/\/\/\?socket=\S+ 2$/m);
  });

  test('-v traces each request on stderr', async () => {
    const r = await nbd([
      'serve',
      '-v',
      '-U',
      '-',
      'memory',
      '1M',
      '--run',
      'qemu-io -f raw -c "write -P 1 4096 4096" -c flush "$uri" >/dev/null',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/"": WRITE 4096\+4096/);
    expect(r.stderr).toMatch(/"": FLUSH/);
  });

  test('bad input: one line, exit 2 for usage and 1 for failures', async () => {
    const dir = s.tmp();
    const taken = await peer(startNbdServe(['memory', '1M']));
    const cases: [string[], number, RegExp][] = [
      [['serve'], 2, /missing a device to serve/],
      [['serve', 'floppy', '1M'], 2, /unknown device 'floppy'/],
      [['serve', 'memory'], 2, /memory needs a size/],
      [['serve', 'memory', '1Q'], 2, /bad size '1Q'/],
      [['serve', 'memory', '1M', 'memory', '2M'], 2, /export 2 \(memory\) needs a name/],
      [['serve', '-e', 'x', 'memory', '1M', '-e', 'x', 'memory', '2M'], 2, /two exports are named "x"/],
      [['serve', 'memory', '1M', 'colour=blue'], 2, /unknown parameter colour= for memory/],
      [['serve', '-p', 'http', 'memory', '1M'], 2, /--port: expected a whole number/],
      [['serve', '--tls=maybe', 'memory', '1M'], 2, /--tls: expected off, on or require/],
      [['serve', '--tls=on', 'memory', '1M'], 2, /needs --tls-certificates/],
      [['serve', '--listen', 'http://x', 'memory', '1M'], 2, /not an nbd\[s\]:\/\/ or nbd\[s\]\+unix:\/\/ URI/],
      [['serve', 'file', join(dir, 'missing.img')], 1, /ENOENT/],
      [['serve', '-U', taken.socket, 'memory', '1M'], 1, /EADDRINUSE/],
    ];
    for (const [args, code, message] of cases) {
      const r = await nbd(args, { timeout: 20_000 });
      expect({ args, code: r.code }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    }
  });
});
