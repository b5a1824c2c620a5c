// What an npm user does with the installed packages, against real peers: our client
// against nbdkit (list, info, write, read back, block status, zero), then our server
// (on the main thread, then on worker threads) read back by nbdinfo and nbdcopy.
// main.mjs (import) and main.cjs (require) load the packages their own way and hand
// them in here. Throws on the first mismatch.
'use strict';
const { execFile, spawn } = require('node:child_process');
const { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const MiB = 1 << 20;

function check(cond, what) {
  if (!cond) throw new Error(`consumer check failed: ${what}`);
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000, maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Resolves once nbdkit is ready: it writes its PID file only once it listens. */
async function ready(pidfile, child) {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`nbdkit exited with ${child.exitCode}`);
    if (existsSync(pidfile)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('nbdkit did not start within 10 s');
}

function pattern(length, seed) {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function clientAgainstNbdkit({ Client, AllocationState }, dir, log) {
  const sock = join(dir, 'nbdkit.sock');
  const pidfile = join(dir, 'nbdkit.pid');
  const nbdkit = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', sock, '-P', pidfile, 'memory', '64M'], { stdio: 'inherit' });
  try {
    await ready(pidfile, nbdkit);
    const client = await Client.connect(`nbd+unix:///?socket=${sock}`);
    const names = (await client.list()).map((e) => e.name);
    check(names.length === 1, `list() gives nbdkit's one export: ${JSON.stringify(names)}`);
    const info = await client.info('');
    check(info.size === 64 * MiB, `info().size is 64 MiB: ${info.size}`);
    const conn = await client.go('', { metaContexts: ['base:allocation'] });
    const data = pattern(MiB, 7);
    await conn.write(data, 4 * MiB, { fua: true });
    const back = await conn.read(4 * MiB, MiB);
    check(Buffer.compare(Buffer.from(back), Buffer.from(data)) === 0, 'read back what was written');
    await conn.zero(4 * MiB, 4096);
    const zeroed = await conn.read(4 * MiB, 4096);
    check(
      zeroed.every((b) => b === 0),
      'zero() zeroes',
    );
    const extents = (await conn.blockStatus(0, 16 * MiB)).get('base:allocation') ?? [];
    const at = (off) => extents.find((e) => e.offset <= off && off < e.offset + e.length);
    check(at(0) !== undefined && (at(0).flags & AllocationState.HOLE) !== 0, `0 is a hole: ${JSON.stringify(extents)}`);
    check(at(4.5 * MiB) !== undefined && (at(4.5 * MiB).flags & AllocationState.HOLE) === 0, `4.5 MiB is data: ${JSON.stringify(extents)}`);
    await conn.flush();
    await conn.disconnect();
    log(`client → nbdkit: list, info, write/read 1 MiB, zero, block status (${extents.length} extents)`);
  } finally {
    nbdkit.kill();
  }
}

/** Serves `device` (on `threads` worker threads if given) and reads it back with libnbd's tools. */
async function serverReadByLibnbd({ listenAndServe, copy: ourCopy }, device, threads, dir, log) {
  const sock = join(dir, `ours-${threads}-${device.constructor.name}.sock`);
  const uri = `nbd+unix:///scratch?socket=${sock}`;
  const size = 16 * MiB;
  const data = pattern(MiB, 3 + threads);
  await device.writeAt(data, 2 * MiB, { fua: false, signal: new AbortController().signal });
  const stop = new AbortController();
  const ready = Promise.withResolvers();
  const opts = { signal: stop.signal, onListen: () => ready.resolve(), ...(threads > 0 ? { threads } : {}) };
  const served = listenAndServe(uri, [{ name: 'scratch', size, device }], opts);
  served.catch((e) => ready.reject(e));
  await ready.promise;
  try {
    const info = JSON.parse(await run('nbdinfo', ['--json', uri]));
    const exp = info.exports[0];
    check(exp['export-name'] === 'scratch' && exp['export-size'] === size, `nbdinfo --json: ${JSON.stringify(exp)}`);
    const map = JSON.parse(await run('nbdinfo', ['--map', '--json', uri]));
    const dataAt = map.find((e) => e.offset <= 2 * MiB && 2 * MiB < e.offset + e.length);
    check(dataAt !== undefined && (dataAt.type & 1) === 0, `nbdinfo --map: 2 MiB is data: ${JSON.stringify(map)}`);
    const copy = join(dir, `copy-${threads}.img`);
    await run('nbdcopy', [uri, copy]);
    const img = readFileSync(copy);
    check(img.length === size, `nbdcopy copied ${img.length} bytes`);
    check(Buffer.compare(img.subarray(2 * MiB, 3 * MiB), Buffer.from(data)) === 0, 'nbdcopy read back what the device holds');
    check(
      img.subarray(0, 2 * MiB).every((b) => b === 0),
      'nbdcopy: the rest is zero',
    );
    const ours = join(dir, `ours-copy-${threads}.img`);
    await ourCopy(uri, ours);
    check(Buffer.compare(readFileSync(ours), img) === 0, "@nbd/copy's copy() gives nbdcopy's bytes");
    const how = `${device.constructor.name}, ${threads > 0 ? `${threads} worker threads` : 'the main thread'}`;
    log(`server (${how}) ← nbdinfo --json, nbdinfo --map (${map.length} extents), nbdcopy and copy() of ${size} bytes`);
  } finally {
    stop.abort();
    await served;
  }
}

/** Runs both halves in a fresh temporary directory. */
async function exercise(packages, log = console.log) {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-consumer-'));
  try {
    await clientAgainstNbdkit(packages, dir, log);
    await serverReadByLibnbd(packages, new packages.MemoryDevice(16 * MiB), 0, dir, log);
    await serverReadByLibnbd(packages, new packages.SharedMemoryDevice(16 * MiB), 2, dir, log);
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, 16 * MiB);
    const fileDevice = await packages.FileDevice.open(file);
    try {
      await serverReadByLibnbd(packages, fileDevice, 2, dir, log);
    } finally {
      await fileDevice.close(); // an unclosed FileHandle is an error once collected (Node 26)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { exercise };
