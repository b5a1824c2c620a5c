// `nbd copy` against libnbd's nbdcopy: the same bytes from the same exports (also
// through `-` pipes), nbdcopy's machine-readable progress, the JSON summary,
// --allocated, and bad input ending in one line with exit code 1 or 2.
import { spawn } from 'node:child_process';
import { linkSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { PATH, type Peer, runOk, startNbdkit, unixUri } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { NBD_SHELL, nbd, nbdOk, startNbdServe } from './support.js';

const s = scoped('nbd-cli-copy-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

function sh(script: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', script], { env: { ...process.env, PATH, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

describe('nbd copy matches nbdcopy', () => {
  test('export → file: the same bytes as nbdcopy, sparse where the source has holes', async () => {
    const src = await peer(startNbdkit(['sparse-random', '64M', 'seed=7']));
    const dir = s.tmp();
    await nbdOk(['copy', src.uri, join(dir, 'ours')]);
    await runOk('nbdcopy', [src.uri, join(dir, 'theirs')]);
    expect(readFileSync(join(dir, 'ours')).equals(readFileSync(join(dir, 'theirs')))).toBe(true);
    expect(statSync(join(dir, 'ours')).blocks * 512).toBeLessThan(48 << 20);
    await nbdOk(['copy', '-C', '2', '-R', '8', '--request-size', '64K', '-T', '2', src.uri, join(dir, 'threads')]);
    expect(readFileSync(join(dir, 'threads')).equals(readFileSync(join(dir, 'theirs')))).toBe(true);
  });

  test('through pipes: export → - | - → export, read back with nbdcopy', async () => {
    const src = await peer(startNbdkit(['sparse-random', '32M', 'seed=3']));
    const dst = await peer(startNbdServe(['memory', '32M']));
    const r = await sh(`${NBD_SHELL} copy '${src.uri}' - | ${NBD_SHELL} copy - '${dst.uri}'`);
    expect(r).toEqual({ code: 0, stderr: '' });
    const dir = s.tmp();
    await runOk('nbdcopy', [src.uri, join(dir, 'a')]);
    await runOk('nbdcopy', [dst.uri, join(dir, 'b')]);
    expect(readFileSync(join(dir, 'a')).equals(readFileSync(join(dir, 'b')))).toBe(true);
    const out = await nbdOk(['copy', dst.uri, '-']);
    expect(out.bytes.equals(readFileSync(join(dir, 'a')))).toBe(true);
  });

  test('file → our server → nbdcopy back; --flush and --destination-is-zero', async () => {
    const dir = s.tmp();
    const data = Buffer.alloc(8 << 20);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    writeFileSync(join(dir, 'in'), data);
    const dst = await peer(startNbdServe(['memory', '8M']));
    await nbdOk(['copy', '--flush', '--destination-is-zero', join(dir, 'in'), dst.uri]);
    await runOk('nbdcopy', [dst.uri, join(dir, 'out')]);
    expect(readFileSync(join(dir, 'out')).equals(data)).toBe(true);
  });

  test("--progress=FD writes nbdcopy's N/100 lines, rising, ending 100/100; --json summarises", async () => {
    const src = await peer(startNbdkit(['pattern', '64M']));
    let fd3 = '';
    const r = await nbd(['copy', '--progress=3', '--json', src.uri, 'null:'], {
      extraStdio: ['pipe'],
      onSpawn: (c) => (c.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (fd3 += d.toString())),
    });
    expect(r.code).toBe(0);
    const lines = fd3.trim().split('\n');
    expect(lines.every((l) => /^\d{1,3}\/100$/.test(l))).toBe(true);
    const pct = lines.map((l) => Number(l.split('/')[0]));
    expect(pct).toEqual([...pct].sort((a, b) => a - b));
    expect(new Set(pct).size).toBe(pct.length);
    expect(lines.at(-1)).toBe('100/100');
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ source: src.uri, destination: 'null:', bytes: 64 << 20 });
    expect(Object.keys(summary).sort()).toEqual(['bytes', 'bytes-per-second', 'destination', 'seconds', 'source', 'zero-bytes']);
    // Copying to standard output, the summary goes to stderr.
    const toStdout = await nbdOk(['copy', '--json', src.uri, '-']);
    expect(toStdout.bytes.length).toBe(64 << 20);
    expect(JSON.parse(toStdout.stderr)).toMatchObject({ destination: '-', bytes: 64 << 20 });
  });

  test('--allocated leaves no holes in a new file; without it zero ranges stay holes', async () => {
    const src = await peer(startNbdkit(['memory', '16M']));
    const dir = s.tmp();
    await nbdOk(['copy', src.uri, join(dir, 'sparse')]);
    await nbdOk(['copy', '--allocated', src.uri, join(dir, 'full')]);
    expect(statSync(join(dir, 'sparse')).blocks * 512).toBeLessThan(1 << 20);
    expect(statSync(join(dir, 'full')).blocks * 512).toBeGreaterThanOrEqual(16 << 20);
  });

  test('bad input: one line on stderr, no stack, exit 2 for usage and 1 for failures', async () => {
    const dir = s.tmp();
    writeFileSync(join(dir, 'big'), Buffer.alloc(2 << 20, 1));
    const small = await peer(startNbdServe(['-e', 'disk', 'memory', '1M'], 'disk'));
    const cases: [string[], number, RegExp][] = [
      [['copy', '--bogus', 'a', 'b'], 2, /unknown option '--bogus'/],
      [['copy', 'only-one'], 2, /missing DESTINATION/],
      [['copy', '-C'], 2, /option '--connections' needs a value/],
      [['copy', '-C', '0', 'a', 'b'], 2, /--connections: expected a whole number from 1 to 64/],
      [['copy', '--request-size', '12X', 'a', 'b'], 2, /bad size '12X'/],
      [['copy', 'nbd://[oops/', 'null:'], 2, /bad NBD URI/],
      [['copy', 'ftp://example.com/x', 'null:'], 2, /not an NBD URI/],
      [['copy', join(dir, 'big'), 'http://example.com/x'], 2, /an http\(s\) URL can only be the source/],
      [['copy', 'null:', join(dir, 'x')], 2, /null: can only be the destination/],
      [['copy', '--progress=99', join(dir, 'big'), 'null:'], 2, /file descriptor 99 is not open/],
      [['copy', 'nbd+unix:///?socket=/nonexistent/sock', 'null:'], 1, /cannot connect to \/nonexistent\/sock/],
      [['copy', small.uri.replace('/disk?', '/nope?'), 'null:'], 1, /NBD_OPT_\w+ refused: ERR_UNKNOWN: unknown export "nope"/],
      [['copy', join(dir, 'big'), small.uri], 1, /destination \(1048576 bytes\) is smaller than the source \(2097152 bytes\)/],
      [['copy', join(dir, 'missing'), 'null:'], 1, /cannot open .*missing: no such file or directory \(ENOENT\)/],
    ];
    for (const [args, code, message] of cases) {
      const r = await nbd(args);
      expect({ args, code: r.code }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});

describe('nbd copy errors say which end, which operation and where', () => {
  test("a read error (nbdkit's error filter), a write error, our server's message, a server going away", async () => {
    const bad = await peer(startNbdkit(['--filter=error', 'pattern', '64M', 'error-pread=EIO', 'error-pread-rate=1']));
    const r = await nbd(['copy', bad.uri, 'null:']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`nbd copy: reading ${bad.uri}: offset 0, 524288 bytes: EIO (Input/output error)\n`);
    // On two threads the worker's error reads the same (its class and fields cross the thread boundary).
    const threads = await nbd(['copy', '-T', '2', '--request-size', '64K', bad.uri, 'null:']);
    expect(threads.stderr).toMatch(
      /^nbd copy: reading nbd\+unix:\/\/\/\?socket=\S+: offset \d+, 65536 bytes: EIO \(Input\/output error\)\n$/,
    );

    const full = await peer(startNbdkit(['--filter=error', 'memory', '64M', 'error-pwrite=ENOSPC', 'error-pwrite-rate=1']));
    const src = await peer(startNbdkit(['pattern', '1M']));
    const w = await nbd(['copy', src.uri, full.uri]);
    expect(w.stderr).toMatch(/^nbd copy: writing nbd\+unix:\S+: offset \d+, 524288 bytes: ENOSPC \(No space left on device\)\n$/);

    // A read-only destination is refused before anything is read.
    const ro = await nbd(['copy', src.uri, bad.uri]); // nbdkit pattern is read-only
    expect(ro.stderr).toBe(`nbd copy: the destination ${bad.uri} is read-only\n`);

    // Our server sends a message with its errors: it is kept.
    const ours = await peer(startNbdServe(['--filter', 'error', 'pattern', '8M', 'error=EIO', 'error-rate=1']));
    const m = await nbd(['copy', '--request-size', '64K', ours.uri, 'null:']);
    expect(m.stderr).toMatch(/^nbd copy: reading \S+: offset 0, 65536 bytes: EIO \(Input\/output error\): .*injected error.*\n$/);

    // The server goes away in the middle: where the copy was, not a bare ESHUTDOWN.
    // (Reads take 10 s, so the copy is mid-read when the kill comes 3 s in, even on a loaded machine.)
    const slow = await startNbdkit(['--filter=delay', 'pattern', '1G', 'rdelay=10']);
    s.defer(() => slow.stop());
    setTimeout(() => slow.proc.kill('SIGTERM'), 3000);
    const gone = await nbd(['copy', slow.uri, 'null:']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(new RegExp(`^nbd copy: reading ${literally(slow.uri)}: offset \\d+, 524288 bytes: \\S`));
    expect(gone.stderr.trim().split('\n')).toHaveLength(1);
  });
});

const literally = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Resolves once `p`'s output matches `re` (polled). */
async function waitForLog(p: Peer, re: RegExp, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.log())) {
    if (Date.now() > deadline) throw new Error(`no ${re} in the log after ${ms} ms:\n${p.log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `script` with bash in its own process group; `signal` goes to the whole group (a terminal's Ctrl-C) once `ready`. */
function bashGroup(
  script: string,
  ready: Promise<void>,
  signal: NodeJS.Signals,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env: { ...process.env, PATH }, stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    ready.then(() => process.kill(-child.pid!, signal), reject);
    child.once('error', reject);
    child.once('close', (code, sig) => resolve({ code, signal: sig, out }));
  });
}

describe('nbd copy onto its own source', () => {
  test('the same file under any name, or the same export, is refused unless --allow-same', async () => {
    const dir = s.tmp();
    const disk = join(dir, 'disk.img');
    const data = Buffer.alloc(4 << 20);
    data.fill(0x5a, 0, 1 << 20); // then 3 MiB of zeroes, written as data
    writeFileSync(disk, data);
    symlinkSync(disk, join(dir, 'link.img'));
    linkSync(disk, join(dir, 'hard.img'));
    const refused =
      /^nbd copy: the source and the destination are the same (file|export) \(.+\): refusing to copy it onto itself; allowSame \(nbd copy --allow-same\) does, in place\n$/;
    for (const other of [disk, join(dir, '.', 'disk.img'), join(dir, 'link.img'), join(dir, 'hard.img')]) {
      const r = await nbd(['copy', disk, other]);
      expect({ other, code: r.code }).toEqual({ other, code: 1 });
      expect(r.stderr).toMatch(refused);
    }
    // Standard output opened onto the file (1<>: not truncated by the shell).
    const out = await sh(`${NBD_SHELL} copy '${disk}' - 1<>'${disk}'`);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(refused);
    expect(readFileSync(disk).equals(data)).toBe(true);
    // Allowed: in place, nothing truncated, the zero blocks punched out.
    const before = statSync(disk).blocks;
    await nbdOk(['copy', '--allow-same', disk, join(dir, 'link.img')]);
    expect(readFileSync(disk).equals(data)).toBe(true);
    expect(statSync(disk).blocks).toBeLessThan(before);

    const mem = await peer(startNbdkit(['memory', '8M']));
    // The same socket by another path, and with TLS asked for: still the same export.
    const roundabout = unixUri(`${mem.dir}/../${basename(mem.dir)}/nbd.sock`);
    for (const dst of [mem.uri, roundabout, mem.uri.replace('nbd+unix:', 'nbds+unix:')]) {
      const r = await nbd(['copy', mem.uri, dst]);
      expect(r.stderr).toMatch(refused);
    }
    await nbdOk(['copy', '--allow-same', mem.uri, mem.uri]);
  });
});

describe('nbd copy interrupted', () => {
  test('Ctrl-C: it disconnects cleanly, then dies from SIGINT, so a shell loop stops, as it does with nbdcopy', async () => {
    const src = await peer(startNbdkit(['--filter=delay', 'pattern', '1G', 'rdelay=200ms']));
    for (const tool of [`${NBD_SHELL} copy`, 'nbdcopy']) {
      const dst = await peer(startNbdkit(['memory', '1G'], ['-v']));
      const loop = `for i in 1 2; do ${tool} '${src.uri}' '${dst.uri}'; echo "went on after $?"; done`;
      const r = await bashGroup(loop, waitForLog(dst, /pwrite count=/), 'SIGINT');
      expect({ tool, ...r }).toEqual({ tool, code: null, signal: 'SIGINT', out: '' });
      if (tool !== 'nbdcopy') expect(dst.log()).toMatch(/client sent NBD_CMD_DISC/); // nbdcopy just closes
      await dst.stop();
    }
  });

  test('SIGTERM and SIGHUP: the same, the child ends from the signal', async () => {
    const src = await peer(startNbdkit(['--filter=delay', 'pattern', '1G', 'rdelay=200ms']));
    for (const sig of ['SIGTERM', 'SIGHUP'] as const) {
      const dst = await peer(startNbdkit(['memory', '1G'], ['-v']));
      const r = await nbd(['copy', src.uri, dst.uri], {
        onSpawn: (c) => void waitForLog(dst, /pwrite count=/).then(() => c.kill(sig)),
      });
      expect({ sig, code: r.code, signal: r.signal }).toEqual({ sig, code: null, signal: sig });
      expect(r.stderr).toBe(`nbd copy: interrupted (${sig})\n`);
      expect(dst.log()).toMatch(/client sent NBD_CMD_DISC/);
      await dst.stop();
    }
  });
});
