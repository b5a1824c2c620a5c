#!/usr/bin/env node
// Re-captures every vector in test/captures/vectors/ from the real peers:
// starts each server on a unix socket in a temp dir, puts record.mjs in front of
// it, runs the real client against the proxy, and writes one JSON per scenario.
//
//   node test/captures/capture.mjs            # all scenarios
//   node test/captures/capture.mjs NAME...    # some of them
//
// Exports are 1 MiB and reads tiny so the files stay small. Cookies and sizes are
// whatever the peers chose; the test re-encodes what it decodes, so they may change.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRecorder } from './record.mjs';

const PATH = `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}`;
const env = { ...process.env, PATH, LANG: 'C' };
const outDir = fileURLToPath(new URL('./vectors/', import.meta.url));
const repo = fileURLToPath(new URL('../../', import.meta.url));
// qemu 10.0 (extended headers) as scripts/bootstrap.sh --peers unpacks it; shown as $QEMU10 in the vectors.
const QEMU10 = `${process.env.NBD_QEMU10_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'nbd-qemu-10')}/usr/bin/`;

// {SOCK} is the server's socket, {PROXY} the recorder's, {DIR} the temp dir.
// `setup` runs first (in {DIR}), e.g. to make an image.
const nbdkitMem = (opts = []) => ['nbdkit', '-f', '-U', '{SOCK}', ...opts, 'memory', '1M'];
const nbdkitData = (opts = []) => ['nbdkit', '-f', '-U', '{SOCK}', ...opts, 'data', '1 2 3 @65536 4 5 6', 'size=1M'];
const qemuNbd = (opts, image = '{DIR}/disk.raw', fmt = 'raw') => ['qemu-nbd', '-k', '{SOCK}', '-t', '-f', fmt, ...opts, image];
const rawImage = [
  ['qemu-img', 'create', '-f', 'raw', '{DIR}/disk.raw', '1M'],
  ['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 4096', '{DIR}/disk.raw'],
];
const qcow2Bitmap = [
  ['qemu-img', 'create', '-f', 'qcow2', '{DIR}/disk.qcow2', '1M'],
  ['qemu-img', 'bitmap', '--add', '{DIR}/disk.qcow2', 'b0'],
  ['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 65536 4096', '{DIR}/disk.qcow2'],
];
const uri = (name = '') => `nbd+unix:///${name}?socket={PROXY}`;
const qemu10Nbd = (opts, image = '{DIR}/disk.raw', fmt = 'raw') => [`${QEMU10}qemu-nbd`, '-k', '{SOCK}', '-t', '-f', fmt, ...opts, image];
const qemu10Io = (...cmds) => [`${QEMU10}qemu-io`, '-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri()];
// Our own server (examples/serve-memory, built by tsc -b), to record what qemu 10's client sends.
const ourServer = [process.execPath, `${repo}examples/dist/serve-memory.js`, '--socket', '{SOCK}', '--size', '1M'];

export const scenarios = [
  // nbdkit greetings and option replies, seen through nbdinfo
  { name: 'nbdkit-memory-nbdinfo', server: nbdkitMem(), client: ['nbdinfo', '--no-content', uri()] },
  { name: 'nbdkit-memory-nbdinfo-list', server: nbdkitMem(), client: ['nbdinfo', '--list', uri()] },
  { name: 'nbdkit-data-nbdinfo-map', server: nbdkitData(), client: ['nbdinfo', '--map', uri()] },
  { name: 'nbdkit-no-sr-nbdinfo', server: nbdkitMem(['--no-sr']), client: ['nbdinfo', uri()] },
  { name: 'nbdkit-exportname-nbdinfo', server: nbdkitMem(['-e', 'disk']), client: ['nbdinfo', '--no-content', uri('disk')] },
  { name: 'nbdkit-mask-handshake-0-nbdinfo', server: nbdkitMem(['--mask-handshake=0']), client: ['nbdinfo', '--no-content', uri()] },
  { name: 'nbdkit-oldstyle-nbdinfo', server: nbdkitMem(['-o']), client: ['nbdinfo', '--no-content', uri()] },
  // simple replies carrying READ data, and WRITE payloads
  {
    name: 'nbdkit-no-sr-qemu-io',
    server: nbdkitData(['--no-sr']),
    client: ['qemu-io', '-f', 'raw', '-c', 'read -v 0 16', '-c', 'write -P 0xab 512 16', '-c', 'flush', uri()],
  },
  {
    name: 'nbdkit-data-qemu-io',
    server: nbdkitData(),
    client: ['qemu-io', '-f', 'raw', '-c', 'read -v 65530 16', '-c', 'write -z 4096 4096', '-c', 'discard 8192 4096', uri()],
  },
  { name: 'qemu-nbd-raw-nbdcopy', setup: rawImage, server: qemuNbd([]), client: ['nbdcopy', '--connections=1', uri(), 'null:'] },
  {
    name: 'nbdkit-memory-nbdcopy-write',
    setup: [['sh', '-c', 'printf "hello, nbd" > {DIR}/src.bin; truncate -s 512 {DIR}/src.bin']],
    server: nbdkitMem(),
    client: ['nbdcopy', '--connections=1', '{DIR}/src.bin', uri()],
  },
  // errors: structured ERROR chunks, and simple replies carrying an errno
  {
    name: 'nbdkit-error-filter-qemu-io',
    server: ['nbdkit', '-f', '-U', '{SOCK}', '--filter=error', 'memory', '1M', 'error=EIO', 'error-pread-rate=1', 'error-pwrite-rate=1'],
    client: ['qemu-io', '-f', 'raw', '-c', 'read 0 512', '-c', 'write 512 512', uri()],
    mayFail: true,
  },
  {
    name: 'nbdkit-error-filter-no-sr-nbdinfo',
    server: ['nbdkit', '-f', '-U', '{SOCK}', '--no-sr', '--filter=error', 'memory', '1M', 'error=ENOSPC', 'error-pread-rate=1'],
    client: ['nbdinfo', uri()],
    mayFail: true,
  },
  // qemu-nbd
  { name: 'qemu-nbd-raw-nbdinfo', setup: rawImage, server: qemuNbd([]), client: ['nbdinfo', '--no-content', uri()] },
  {
    name: 'qemu-nbd-raw-qemu-io',
    setup: rawImage,
    server: qemuNbd([]),
    client: ['qemu-io', '-f', 'raw', '-c', 'read -v 0 16', '-c', 'write -P 0x33 4096 16', uri()],
  },
  {
    name: 'qemu-nbd-named-nbdinfo-list',
    setup: rawImage,
    server: qemuNbd(['-x', 'disk', '-D', 'a described disk']),
    client: ['nbdinfo', '--list', uri('disk')],
  },
  {
    name: 'qemu-nbd-named-unknown-export',
    setup: rawImage,
    server: qemuNbd(['-x', 'disk', '-D', 'a described disk']),
    client: ['nbdinfo', uri('nosuch')],
    mayFail: true,
  },
  {
    name: 'qemu-nbd-qcow2-bitmap-map',
    setup: qcow2Bitmap,
    server: qemuNbd(['-A', '-B', 'b0'], '{DIR}/disk.qcow2', 'qcow2'),
    client: ['nbdinfo', '--map=qemu:dirty-bitmap:b0', uri()],
  },
  {
    name: 'qemu-nbd-qcow2-allocation-depth-map',
    setup: qcow2Bitmap,
    server: qemuNbd(['-A', '-B', 'b0'], '{DIR}/disk.qcow2', 'qcow2'),
    client: ['nbdinfo', '--map=qemu:allocation-depth', uri()],
  },
  // qemu 10.0: extended headers (NBD_OPT_EXTENDED_HEADERS) on both sides
  {
    name: 'qemu10-nbd-raw-qemu10-io',
    setup: rawImage,
    server: qemu10Nbd([]),
    client: qemu10Io('read -v 0 16', 'write -P 0x33 4096 16', 'write -z 8192 4096', 'discard 12288 4096', 'flush'),
  },
  {
    name: 'qemu10-nbd-qcow2-qemu10-img-map',
    setup: qcow2Bitmap,
    server: qemu10Nbd(['-A', '-B', 'b0'], '{DIR}/disk.qcow2', 'qcow2'),
    client: [`${QEMU10}qemu-img`, 'map', '--output=json', '-f', 'raw', uri()],
  },
  {
    name: 'qemu10-nbd-qcow2-nbdinfo-map',
    setup: qcow2Bitmap,
    server: qemu10Nbd(['-A', '-B', 'b0'], '{DIR}/disk.qcow2', 'qcow2'),
    client: ['nbdinfo', '--map=qemu:allocation-depth', uri()],
  },
  {
    name: 'ours-qemu10-io',
    server: ourServer,
    client: qemu10Io('write -P 0x33 4096 16', 'read -v 4096 16', 'write -z -u 8192 4096', 'discard 0 4096', 'map'),
  },
  {
    name: 'qemu-nbd-qcow2-list-contexts',
    setup: qcow2Bitmap,
    server: qemuNbd(['-A', '-B', 'b0'], '{DIR}/disk.qcow2', 'qcow2'),
    client: ['nbdinfo', '--content', '--list', uri()],
  },
];

async function waitForSocket(path, proc) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`);
    const ok = await new Promise((resolve) => {
      const s = connect(path);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs one scenario; resolves to the vector object written to vectors/NAME.json. */
export async function capture(sc) {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-capture-'));
  const sock = join(dir, 'server.sock');
  const proxy = join(dir, 'proxy.sock');
  const sub = (a) => a.replaceAll('{SOCK}', sock).replaceAll('{PROXY}', proxy).replaceAll('{DIR}', dir);
  let server;
  try {
    for (const cmd of sc.setup ?? []) execFileSync(cmd[0], cmd.slice(1).map(sub), { env, stdio: 'pipe' });
    server = spawn(sc.server[0], sc.server.slice(1).map(sub), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let serverLog = '';
    server.stderr.on('data', (d) => (serverLog += d));
    try {
      await waitForSocket(sock, server);
    } catch (e) {
      throw new Error(`${sc.name}: ${e.message}\n${serverLog}`);
    }
    const rec = startRecorder(proxy, sock);
    await rec.listening;
    const clientArgs = sc.client.slice(1).map(sub);
    const result = await new Promise((resolve) => {
      const c = spawn(sc.client[0], clientArgs, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (out += d));
      c.once('exit', (code) => resolve({ code, out }));
    });
    if (result.code !== 0 && !sc.mayFail) throw new Error(`${sc.name}: client exited ${result.code}\n${result.out}`);
    const connections = await rec.stop();
    const show = (args) =>
      args
        .map((a) => sub(a).replaceAll(dir, '$DIR').replaceAll(QEMU10, '$QEMU10/').replaceAll(repo, './'))
        .map((a) => (a === process.execPath ? 'node' : a))
        .join(' ');
    return {
      name: sc.name,
      captured: new Date().toISOString().slice(0, 10),
      server: show(sc.server),
      client: show(sc.client),
      clientExit: result.code,
      connections,
    };
  } finally {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server.once('exit', r));
      server.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const only = process.argv.slice(2);
  for (const sc of scenarios.filter((s) => only.length === 0 || only.includes(s.name))) {
    const v = await capture(sc);
    const bytes = v.connections.reduce((n, c) => n + (c.c2s.length + c.s2c.length) / 2, 0);
    writeFileSync(join(outDir, `${sc.name}.json`), `${JSON.stringify(v, null, 2)}\n`);
    console.log(`${sc.name}: ${v.connections.length} connection(s), ${bytes} bytes`);
  }
}
