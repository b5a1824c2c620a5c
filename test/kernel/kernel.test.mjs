// Kernel tests: run INSIDE the VM (test/kernel/run.sh boots it once and runs this
// one file, since every node start costs ~1 s under TCG). Imports the built dist/.
// Every child process is spawned asynchronously: a synchronous one would block the
// event loop that serves /dev/nbdN to the kernel (deadlock).
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { Client } from '../../packages/client/dist/index.js';
import { blocksize, FileDevice } from '../../packages/devices/dist/index.js';
import { configure, disconnect, loopback, status, supervise } from '../../packages/linux/dist/index.js';
import { MemoryDevice } from '../../packages/server/dist/index.js';

const MiB = 1 << 20;
const SIZE = 64 * MiB;
const TMP = '/tmp/nbd-kernel-tests';
const only = process.env.KERNEL_TEST_FILTER ? new RegExp(process.env.KERNEL_TEST_FILTER) : null;

// ---------------------------------------------------------------- harness

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const cleanups = [];
const defer = (fn) => cleanups.push(fn);

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
function assertEq(a, b, msg) {
  if (a !== b) throw new Error(`${msg}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}

/** Runs a command asynchronously; resolves with { code, stdout, stderr }. */
function sh(cmd, args, { timeout = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout, maxBuffer: 64 * MiB, encoding: 'buffer' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}`));
      else resolve({ code: err ? err.code : 0, stdout, stderr: stderr.toString() });
    });
  });
}
async function ok(cmd, args, opts) {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}
const text = async (cmd, args) => (await ok(cmd, args)).toString().trim();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sysSize = (i) => Number(readFileSync(`/sys/block/nbd${i}/size`, 'utf8'));

async function waitFor(cond, what, ms = 15_000) {
  const t = Date.now();
  while (!(await cond())) {
    if (Date.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Writes `data` at `offset` of a block device with O_DIRECT + fsync (a FLUSH), from a child. */
async function ddWrite(path, file, offsetMiB) {
  await ok('dd', [`if=${file}`, `of=${path}`, 'bs=1M', `seek=${offsetMiB}`, 'oflag=direct', 'conv=fsync,notrunc', 'status=none']);
}
/**
 * Writes `file` at `offsetMiB` of a block device in small O_DIRECT writes and, with requests
 * in flight, kills `server` and starts `restart()` in its place. Resolves with the new
 * server once every write completed: the kernel held them while the link was dead.
 */
async function restartUnderWrites(path, file, offsetMiB, server, restart) {
  const writing = ok('dd', [
    `if=${file}`,
    `of=${path}`,
    'bs=64k',
    `seek=${offsetMiB * 16}`,
    'oflag=direct',
    'conv=fsync,notrunc',
    'status=none',
  ]);
  await sleep(100);
  await server.kill();
  await sleep(300);
  const next = await restart();
  await writing;
  return next;
}
async function ddRead(path, offsetMiB, mib) {
  return ok('dd', [`if=${path}`, 'bs=1M', `skip=${offsetMiB}`, `count=${mib}`, 'iflag=direct', 'status=none']);
}

async function refFile(name, bytes) {
  const data = randomBytes(bytes);
  const file = `${TMP}/${name}`;
  await writeFile(file, data);
  return { data, file };
}

/** Spawns a server and waits for its unix socket. */
async function startServer(cmd, args, sock) {
  await rm(sock, { force: true });
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => child.once('exit', r));
  defer(() => child.kill('SIGKILL'));
  await waitFor(() => existsSync(sock) || child.exitCode !== null, `${cmd} socket`);
  if (!existsSync(sock)) throw new Error(`${cmd} exited: ${err}`);
  return { child, kill: async () => (child.kill('SIGKILL'), await exited) };
}
const nbdkitMemory = (sock) => startServer('nbdkit', ['-f', '-U', sock, 'memory', `${SIZE}`], sock);
const qemuNbd = (sock, img) => startServer('qemu-nbd', ['-k', sock, '-f', 'raw', '-x', '', '--shared=8', '-t', img], sock);
const uri = (sock) => `nbd+unix:///?socket=${sock}`;
const goKernel = async (sock) => (await Client.connect(uri(sock))).go('', { structuredReplies: false });

/** loopback() whose device is closed after the test even when it fails. */
async function attach(dev, size, opts) {
  const lb = await loopback(dev, size, opts);
  defer(() => lb.close());
  return lb;
}
/** configure() whose device is disconnected after the test even when it fails. */
async function attachConns(conns, opts) {
  const index = await configure(conns, opts);
  defer(() => disconnect(index));
  return index;
}

/** Mounts /dev/nbdN, runs fn(mountpoint), unmounts. */
async function withMount(path, opts, fn) {
  const mnt = `${TMP}/mnt`;
  await mkdir(mnt, { recursive: true });
  await ok('mount', [...opts, path, mnt]);
  try {
    await fn(mnt);
  } finally {
    await ok('umount', [mnt]);
  }
}

/** A MemoryDevice wrapper counting the calls the kernel causes. */
function counting(inner) {
  const n = { sync: 0, trim: 0, write: 0, zero: 0, noHole: 0 };
  const dev = {
    n,
    multiConn: true,
    readAt: (b, o, x) => inner.readAt(b, o, x),
    writeAt: (b, o, x) => (n.write++, inner.writeAt(b, o, x)),
    sync: (x) => (n.sync++, inner.sync(x)),
    trim: (o, l, x) => (n.trim++, inner.trim(o, l, x)),
    zero: (o, l, x) => (n.zero++, x?.noHole && n.noHole++, inner.zero(o, l, x)),
  };
  return dev;
}
/** 6.12 or later: the driver sends NBD_CMD_WRITE_ZEROES (6.1 has no REQ_OP_WRITE_ZEROES mapping). */
const sendsWriteZeroes = (() => {
  const [major, minor] = release().split('.').map(Number);
  return major > 6 || (major === 6 && minor >= 12);
})();

function superblockMagic(dev) {
  const b = new Uint8Array(2);
  dev.readAt(b, 1024 + 56, {});
  return b[0] | (b[1] << 8);
}

// ---------------------------------------------------------------- tests

test('loopback MemoryDevice: mkfs.ext4, mount, write, umount, detach; contents checked from JS and by re-attaching', async () => {
  const mem = new MemoryDevice(SIZE);
  const ref = await refFile('ref-mem.bin', 3 * MiB);
  let lb = await attach(mem, SIZE);
  await ok('mkfs.ext4', ['-q', '-F', lb.path]);
  await withMount(lb.path, [], async (mnt) => {
    await ok('cp', [ref.file, `${mnt}/a.bin`]);
    await ok('sh', ['-c', `echo hello > ${mnt}/b.txt && sync`]);
  });
  await lb.close();
  assertEq(sysSize(lb.index), 0, 'size after detach');
  assertEq(superblockMagic(mem), 0xef53, 'ext4 superblock magic in the MemoryDevice');
  lb = await attach(mem, SIZE, { readOnly: true });
  await withMount(lb.path, ['-o', 'ro,noload'], async (mnt) => {
    assert((await readFile(`${mnt}/a.bin`)).equals(ref.data), 'a.bin survives detach/re-attach');
    assertEq((await readFile(`${mnt}/b.txt`, 'utf8')).trim(), 'hello', 'b.txt');
  });
  await lb.close();
});

test('loopback FileDevice: ext4 written through /dev/nbdN lands in the backing file', async () => {
  const img = `${TMP}/file.img`;
  await ok('truncate', ['-s', `${SIZE}`, img]);
  const dev = await FileDevice.open(img);
  const ref = await refFile('ref-file.bin', 2 * MiB);
  const lb = await attach(dev, SIZE);
  await ok('mkfs.ext4', ['-q', '-F', lb.path]);
  await withMount(lb.path, [], async (mnt) => {
    await ok('cp', [ref.file, `${mnt}/a.bin`]);
  });
  await lb.close();
  await dev.close?.();
  await ok('e2fsck', ['-fn', img]);
  const out = await ok('debugfs', ['-R', 'cat /a.bin', img]);
  assert(out.equals(ref.data), 'backing file holds a.bin');
});

// FileDevice on a block device: a second /dev/nbdN (a loopback of a MemoryDevice)
// stands in for a disk, so each ioctl's effect is seen in the MemoryDevice below.
test('FileDevice on a block device: BLKGETSIZE64, BLKSSZGET/BLKPBSZGET, BLKDISCARD, BLKZEROOUT, O_DIRECT', async () => {
  const mem = new MemoryDevice(SIZE);
  const below = counting(mem);
  const lb = await attach(below, SIZE, { blockSize: 4096 });
  const queue = `/sys/block/nbd${lb.index}/queue`;
  const dev = await FileDevice.open(lb.path);
  defer(() => dev.close());
  assertEq(dev.kind, 'block', 'kind');
  assertEq(dev.size, SIZE, 'size from BLKGETSIZE64');
  assertEq(dev.blockSizes.min, 4096, 'logical sector size from BLKSSZGET');
  assert(dev.blockSizes.preferred >= 4096, 'physical sector size from BLKPBSZGET');
  const io = { fua: false, signal: new AbortController().signal };
  const data = (await refFile('blk.bin', MiB)).data;
  await dev.writeAt(data, 4 * MiB, { ...io, fua: true });
  const back = new Uint8Array(MiB);
  mem.readAt(back, 4 * MiB, {});
  assert(Buffer.from(back).equals(data), 'a FUA write reached the device below');
  // Trim: offered because the queue discards; BLKDISCARD arrives as NBD_CMD_TRIM.
  assert(typeof dev.trim === 'function', 'trim offered (discard_max_bytes > 0)');
  const trims = below.n.trim;
  await dev.trim(4 * MiB, 512 * 1024, io);
  assert(below.n.trim > trims, 'BLKDISCARD sent TRIM');
  mem.readAt(back, 4 * MiB, {});
  assert(
    back.subarray(0, 512 * 1024).every((b) => b === 0),
    'discarded range reads as zeroes below',
  );
  // Zero: BLKZEROOUT never unmaps; fast only where the queue zeroes in hardware.
  const hwZero = Number(readFileSync(`${queue}/write_zeroes_max_bytes`, 'utf8')) > 0;
  await dev.zero(4 * MiB + 512 * 1024, 512 * 1024, { ...io, noHole: true, fast: false });
  mem.readAt(back, 4 * MiB, {});
  assert(
    back.every((b) => b === 0),
    'BLKZEROOUT zeroed the range below',
  );
  let fastErr;
  await dev.zero(8 * MiB, 64 * 1024, { ...io, noHole: false, fast: true }).catch((e) => (fastErr = e));
  if (hwZero) assert(fastErr === undefined, `fast zero allowed with write_zeroes_max_bytes > 0: ${fastErr}`);
  else assert(fastErr?.errnoName === 'ENOTSUP', `fast zero refused without hardware zeroing: ${fastErr}`);
  // O_DIRECT: unaligned memory goes through bounce buffers; bytes arrive below.
  const direct = await FileDevice.open(lb.path, { direct: true });
  defer(() => direct.close());
  const odd = new Uint8Array(2 * 4096 + 3).subarray(3).fill(0x5d);
  await direct.writeAt(odd, 12 * MiB, io);
  const got = new Uint8Array(8192 + 5).subarray(5);
  await direct.readAt(got, 12 * MiB, io);
  assert(
    got.every((b) => b === 0x5d),
    'O_DIRECT read back',
  );
  mem.readAt(back.subarray(0, 8192), 12 * MiB, {});
  assert(
    back.subarray(0, 8192).every((b) => b === 0x5d),
    'O_DIRECT write reached the device below',
  );
  let misaligned;
  await direct.readAt(new Uint8Array(512), 512, io).catch((e) => (misaligned = e));
  assert(misaligned !== undefined, 'a read not aligned to the 4096-byte sector fails under O_DIRECT');
  // The blocksize adapter makes 512-byte requests work on it again.
  const bs = blocksize(direct, { minBlock: 4096 });
  await bs.writeAt(new Uint8Array(512).fill(0x77), 12 * MiB + 512, io);
  mem.readAt(back.subarray(0, 4096), 12 * MiB, {});
  assert(back[511] === 0x5d && back[512] === 0x77 && back[1024] === 0x5d, 'read-modify-write kept the rest of the sector');
  // Closed before the device below goes away (the deferred closes cover failures).
  await direct.close();
  await dev.close();
});

test('FLUSH reaches Device.sync (fsync, sync) and TRIM reaches Device.trim (blkdiscard)', async () => {
  const mem = new MemoryDevice(SIZE);
  const dev = counting(mem);
  const lb = await attach(dev, SIZE);
  const ref = await refFile('ref-flush.bin', MiB);
  const before = dev.n.sync;
  await ddWrite(lb.path, ref.file, 4);
  assert(dev.n.sync > before, `fsync sent FLUSH (sync calls ${before} -> ${dev.n.sync})`);
  const back = new Uint8Array(MiB);
  mem.readAt(back, 4 * MiB, {});
  assert(Buffer.from(back).equals(ref.data), 'written bytes in the device');
  await ok('mkfs.ext4', ['-q', '-F', lb.path]);
  await withMount(lb.path, [], async (mnt) => {
    await ok('cp', [ref.file, `${mnt}/f.bin`]);
    const s1 = dev.n.sync;
    await ok('sync', []);
    assert(dev.n.sync > s1, `sync(1) on ext4 sent FLUSH (sync calls ${s1} -> ${dev.n.sync})`);
  });
  await ok('blkdiscard', ['-o', `${4 * MiB}`, '-l', `${MiB}`, lb.path]);
  assert(dev.n.trim > 0, 'blkdiscard sent TRIM');
  mem.readAt(back, 4 * MiB, {});
  assert(
    back.every((b) => b === 0),
    'trimmed range of the MemoryDevice reads as zeroes',
  );
  await lb.close();
});

test(`blkdiscard -z: ${sendsWriteZeroes ? 'WRITE_ZEROES reaches Device.zero (6.12)' : 'the block layer writes zero pages (6.1 sends no WRITE_ZEROES)'}`, async () => {
  const mem = new MemoryDevice(SIZE);
  const dev = counting(mem);
  const lb = await attach(dev, SIZE);
  const ref = await refFile('ref-zero.bin', 2 * MiB);
  await ddWrite(lb.path, ref.file, 8);
  const writes = dev.n.write;
  // --zeroout = BLKZEROOUT: REQ_OP_WRITE_ZEROES with REQ_NOUNMAP (6.12 maps it to NO_HOLE).
  await ok('blkdiscard', ['-z', '-o', `${8 * MiB}`, '-l', `${2 * MiB}`, lb.path]);
  const back = new Uint8Array(2 * MiB);
  mem.readAt(back, 8 * MiB, {});
  assert(
    back.every((b) => b === 0),
    'zeroed range reads as zeroes in the device',
  );
  if (sendsWriteZeroes) {
    assert(dev.n.zero > 0 && dev.n.noHole === dev.n.zero, `WRITE_ZEROES with NO_HOLE (zero calls ${dev.n.zero}, noHole ${dev.n.noHole})`);
    assertEq(dev.n.write, writes, 'no WRITE for the zeroed range');
  } else {
    assertEq(dev.n.zero, 0, 'zero calls');
    assert(dev.n.write > writes, `zero pages arrived as WRITEs (${writes} -> ${dev.n.write})`);
  }
  await lb.close();
});

test('read-only export: blockdev --getro is 1 and writes fail', async () => {
  const lb = await attach(new MemoryDevice(SIZE), SIZE, { readOnly: true });
  assertEq(await text('blockdev', ['--getro', lb.path]), '1', 'getro');
  const r = await sh('dd', ['if=/dev/zero', `of=${lb.path}`, 'bs=4k', 'count=1', 'oflag=direct', 'status=none']);
  assert(r.code !== 0, 'a write to a read-only device fails');
  await lb.close();
  const rw = await attach(new MemoryDevice(SIZE), SIZE);
  assertEq(await text('blockdev', ['--getro', rw.path]), '0', 'getro of a writable export');
  await rw.close();
});

test('block size honoured: --getss / --getbsz for 4096 and 512', async () => {
  for (const bs of [4096, 512]) {
    const lb = await attach(new MemoryDevice(SIZE), SIZE, { blockSize: bs });
    assertEq(await text('blockdev', ['--getss', lb.path]), String(bs), `getss ${bs}`);
    assertEq(await text('blockdev', ['--getsize64', lb.path]), String(SIZE), 'getsize64');
    if (bs === 4096) assertEq(await text('blockdev', ['--getbsz', lb.path]), '4096', 'getbsz');
    await lb.close();
  }
});

test('multi-connection loopback (4 connections, netlink and ioctl): parallel writes all land', async () => {
  for (const mode of ['netlink', 'ioctl']) {
    const mem = new MemoryDevice(SIZE);
    const lb = await attach(mem, SIZE, { connections: 4, mode });
    const refs = await Promise.all([0, 1, 2, 3].map((i) => refFile(`mc-${i}.bin`, MiB)));
    await Promise.all(refs.map((r, i) => ddWrite(lb.path, r.file, i * 8)));
    for (const [i, r] of refs.entries()) {
      const back = new Uint8Array(MiB);
      mem.readAt(back, i * 8 * MiB, {});
      assert(Buffer.from(back).equals(r.data), `${mode}: region ${i}`);
    }
    await lb.close();
    assertEq(sysSize(lb.index), 0, `${mode}: size after detach`);
  }
});

test('loopback refuses several connections for a device without multiConn', async () => {
  const dev = { readAt: (b) => b.fill(0) };
  let err;
  await loopback(dev, SIZE, { connections: 2 }).catch((e) => (err = e));
  assert(err && /multiConn/.test(err.message), `clear error, got ${err}`);
});

for (const server of ['qemu-nbd', 'nbdkit']) {
  for (const mode of ['netlink', 'ioctl']) {
    for (const n of [1, 4]) {
      test(`configure: ${server}, ${mode}, ${n} connection(s): write/read through /dev/nbdN, data on the server`, async () => {
        const sock = `${TMP}/${server}.sock`;
        let srv;
        if (server === 'qemu-nbd') {
          const img = `${TMP}/q.img`;
          await ok('truncate', ['-s', `${SIZE}`, img]);
          srv = await qemuNbd(sock, img);
        } else {
          srv = await nbdkitMemory(sock);
        }
        const conns = await Promise.all(Array.from({ length: n }, () => goKernel(sock)));
        const index = await attachConns(conns, { mode });
        assertEq(sysSize(index) * 512, SIZE, 'device size');
        const ref = await refFile('cfg.bin', 2 * MiB);
        await ddWrite(`/dev/nbd${index}`, ref.file, 10);
        assert((await ddRead(`/dev/nbd${index}`, 10, 2)).equals(ref.data), 'read back through the device');
        await disconnect(index);
        await waitFor(() => sysSize(index) === 0, 'size 0 after disconnect');
        const c = await goKernel(sock);
        const onServer = await c.read(10 * MiB, 2 * MiB);
        await c.disconnect();
        assert(Buffer.from(onServer).equals(ref.data), 'the server has the data');
        await srv.kill();
      });
    }
  }
}

test('configure refuses a busy device index with EBUSY', async () => {
  const lb = await attach(new MemoryDevice(SIZE), SIZE);
  const sock = `${TMP}/busy.sock`;
  const srv = await nbdkitMemory(sock);
  let err;
  await configure(await goKernel(sock), { index: lb.index }).catch((e) => (err = e));
  assert(err && err.errnoName === 'EBUSY' && /busy/.test(err.message), `EBUSY with a clear message, got ${err}`);
  await lb.close();
  await srv.kill();
});

test('supervisor: server killed mid-I/O, device reconnects, flushed data intact, I/O resumes', async () => {
  const img = `${TMP}/sup.img`;
  await ok('truncate', ['-s', `${SIZE}`, img]);
  const sock = `${TMP}/sup.sock`;
  let srv = await startServer('nbdkit', ['-f', '-U', sock, 'file', img], sock);
  const index = await attachConns(await goKernel(sock), { timeout: 3, deadConnTimeout: 60 });
  const events = [];
  const sup = await supervise(index, async () => [await goKernel(sock)], { onReconnect: (e) => events.push(e ?? 'ok') });
  defer(() => sup.close());
  const a = await refFile('sup-a.bin', 2 * MiB);
  await ddWrite(`/dev/nbd${index}`, a.file, 0); // flushed before the kill
  const b = await refFile('sup-b.bin', 32 * MiB);
  // Must succeed: the kernel held and retried the I/O.
  srv = await restartUnderWrites(`/dev/nbd${index}`, b.file, 16, srv, () => startServer('nbdkit', ['-f', '-U', sock, 'file', img], sock));
  await waitFor(() => sup.reconnects >= 1, `a reconnect (events: ${events.join(', ')})`);
  assert((await ddRead(`/dev/nbd${index}`, 0, 2)).equals(a.data), 'data flushed before the kill is intact');
  assert((await ddRead(`/dev/nbd${index}`, 16, 32)).equals(b.data), 'the write in flight completed after reconnect');
  sup.close();
  await disconnect(index);
  await waitFor(() => sysSize(index) === 0, 'size 0 after disconnect');
  const onDisk = Buffer.alloc(2 * MiB);
  const fh = await (await import('node:fs/promises')).open(img, 'r');
  await fh.read(onDisk, 0, onDisk.length, 0);
  await fh.close();
  assert(onDisk.equals(a.data), 'backing file has the flushed data');
  await srv.kill();
});

test('no supervisor: server killed, I/O errors out, the device detaches cleanly (netlink and ioctl)', async () => {
  for (const mode of ['netlink', 'ioctl']) {
    const sock = `${TMP}/dead-${mode}.sock`;
    const srv = await nbdkitMemory(sock);
    const index = await attachConns(await goKernel(sock), { mode });
    await ddRead(`/dev/nbd${index}`, 0, 1);
    await srv.kill();
    await sleep(200);
    const r = await sh('dd', [`if=/dev/nbd${index}`, 'of=/dev/null', 'bs=1M', 'skip=5', 'count=1', 'iflag=direct', 'status=none']);
    assert(r.code !== 0, `${mode}: I/O to a dead device fails`);
    if (mode === 'ioctl') {
      // DO_IT returns on its own when the link dies; the worker exits and the device resets.
      await waitFor(() => !existsSync(`/sys/block/nbd${index}/pid`) && sysSize(index) === 0, 'ioctl device reset');
    } else {
      await disconnect(index);
      await waitFor(() => sysSize(index) === 0, 'netlink device reset');
    }
    const st = await status(index);
    assert(
      st.every((d) => !d.connected),
      `${mode}: status says disconnected`,
    );
  }
});

test('12 attach/detach cycles (netlink and ioctl): no device stuck, no thread left', async () => {
  const threads = () => readdirSync('/proc/self/task').length;
  const cycle = async (mode) => {
    const lb = await loopback(new MemoryDevice(SIZE), SIZE, { mode });
    await ddRead(lb.path, 0, 1);
    await lb.close();
  };
  await cycle('ioctl'); // warm up libuv's pool and koffi
  await sleep(200);
  const base = threads();
  for (let i = 0; i < 12; i++) await cycle(i % 2 ? 'ioctl' : 'netlink');
  await sleep(500);
  const st = await status();
  assert(
    st.every((d) => !d.connected),
    `every device disconnected: ${JSON.stringify(st.filter((d) => d.connected))}`,
  );
  for (const d of st) assertEq(sysSize(d.index), 0, `nbd${d.index} size`);
  assert(threads() <= base, `threads: ${threads()} now, ${base} before (a DO_IT worker leaked?)`);
});

/** X.509 credentials in nbdkit's layout (ECDSA keys: quick to make under TCG), and a PSK file for "alice". */
async function tlsCredentials() {
  const dir = `${TMP}/tls`;
  await mkdir(dir, { recursive: true });
  const cert = async (name, lines, signer) => {
    await ok('certtool', ['--generate-privkey', '--key-type=ecdsa', '--outfile', `${dir}/${name}-key.pem`]);
    await writeFile(`${dir}/${name}.info`, `${lines.join('\n')}\n`);
    const by = signer
      ? ['--generate-certificate', '--load-ca-certificate', `${dir}/ca-cert.pem`, '--load-ca-privkey', `${dir}/ca-key.pem`]
      : ['--generate-self-signed'];
    await ok('certtool', [
      ...by,
      '--load-privkey',
      `${dir}/${name}-key.pem`,
      '--template',
      `${dir}/${name}.info`,
      '--outfile',
      `${dir}/${name}-cert.pem`,
    ]);
  };
  await cert('ca', ['cn = kernel test CA', 'ca', 'cert_signing_key', 'expiration_days = 2']);
  await cert(
    'server',
    ['cn = localhost', 'dns_name = localhost', 'tls_www_server', 'encryption_key', 'signing_key', 'expiration_days = 2'],
    true,
  );
  await ok('psktool', ['-u', 'alice', '-p', `${dir}/keys.psk`]);
  return dir;
}

test('TLS: nbdkit --tls=require in the guest, configure() pumps it to the kernel; mkfs, mount, write, umount, detach, data on the server; a supervisor reconnect over TLS', async () => {
  const creds = await tlsCredentials();
  const img = `${TMP}/tls.img`;
  await ok('truncate', ['-s', `${SIZE}`, img]);
  const sock = `${TMP}/tls.sock`;
  const nbdkit = (tlsArgs) => startServer('nbdkit', ['-f', '-U', sock, '--tls=require', ...tlsArgs, 'file', img], sock);
  const x509 = { mode: 'require', certificates: creds, hostname: 'localhost' };
  const goTls = async (tls) => {
    const conn = await (await Client.connect(uri(sock), { tls })).go('', { structuredReplies: false });
    assert(conn.tls?.protocol?.startsWith('TLSv1.'), `TLS negotiated (${JSON.stringify(conn.tls)})`);
    return conn;
  };
  // X.509: a filesystem through the pump, checked on the server's file afterwards.
  let srv = await nbdkit([`--tls-certificates=${creds}`]);
  const plain = await sh('nbdinfo', ['--size', uri(sock)]);
  assert(plain.code !== 0, 'the server refuses plaintext');
  const ref = await refFile('tls-a.bin', 3 * MiB);
  let index = await attachConns([await goTls(x509), await goTls(x509)]);
  await ok('mkfs.ext4', ['-q', '-F', `/dev/nbd${index}`]);
  await withMount(`/dev/nbd${index}`, [], async (mnt) => {
    await ok('cp', [ref.file, `${mnt}/a.bin`]);
  });
  await disconnect(index);
  await waitFor(() => sysSize(index) === 0, 'size 0 after disconnect');
  await srv.kill();
  await ok('e2fsck', ['-fn', img]);
  assert((await ok('debugfs', ['-R', 'cat /a.bin', img])).equals(ref.data), "the server's file holds a.bin");
  // PSK, supervised: the server dies mid-I/O and comes back; the supervisor reconnects over TLS.
  const psk = { mode: 'require', pskFile: `${creds}/keys.psk`, username: 'alice' };
  srv = await nbdkit([`--tls-psk=${creds}/keys.psk`]);
  index = await attachConns([await goTls(psk)], { timeout: 3, deadConnTimeout: 60 });
  const events = [];
  const sup = await supervise(index, async () => [await goTls(psk)], { onReconnect: (e) => events.push(e ?? 'ok') });
  defer(() => sup.close());
  const b = await refFile('tls-b.bin', 4 * MiB);
  srv = await restartUnderWrites(`/dev/nbd${index}`, b.file, 1, srv, () => nbdkit([`--tls-psk=${creds}/keys.psk`]));
  await waitFor(() => sup.reconnects >= 1, `a reconnect (events: ${events.join(', ')})`);
  assert((await ddRead(`/dev/nbd${index}`, 1, 4)).equals(b.data), 'the write in flight completed after the TLS reconnect');
  sup.close();
  await disconnect(index);
  await srv.kill();
});

// ---------------------------------------------------------------- the nbd command (@nbd/cli)
// Each `nbd` start loads its packages over 9p under TCG (10-30 s here), so every
// test runs at most four of them, with generous limits.

const NBD = new URL('../../packages/cli/dist/bin.js', import.meta.url).pathname;
const CLI_MS = 150_000;
/** `nbd ARGS…` to completion: { code, stdout, stderr }. */
const nbdCli = (args) => sh(process.execPath, [NBD, ...args], { timeout: CLI_MS }).then((r) => ({ ...r, stdout: r.stdout.toString() }));
/** `nbd ARGS…` left running in the foreground: resolves once it printed its device and the line saying it stays. */
async function nbdForeground(args) {
  const child = spawn(process.execPath, [NBD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  defer(() => child.kill('SIGKILL'));
  const ready = () => /\/dev\/nbd\d+\n/.test(out) && /nbd attach: .*(serving|staying)/.test(err);
  await waitFor(() => ready() || child.exitCode !== null, `nbd ${args.join(' ')} to attach`, CLI_MS);
  if (!ready()) throw new Error(`nbd ${args.join(' ')} exited ${child.exitCode}: ${err}`);
  return { path: out.trim(), index: Number(/nbd(\d+)/.exec(out)[1]), child, exited, stderr: () => err };
}
const connected = async (index) => (await status(index)).some((d) => d.connected);

test('cli: nbd attach URI exits once the kernel holds the socket; mkfs/mount/write; nbd detach', async () => {
  const sock = `${TMP}/cli-attach.sock`;
  const srv = await nbdkitMemory(sock);
  const ref = await refFile('cli-a.bin', 2 * MiB);
  const a = await nbdCli(['attach', '--json', uri(sock)]);
  assertEq(a.code, 0, `nbd attach exit code (${a.stderr})`);
  const { device: path, index, size } = JSON.parse(a.stdout);
  assert(/^\/dev\/nbd\d+$/.test(path) && size === SIZE, `printed the device: ${a.stdout}`);
  defer(() => disconnect(index).catch(() => {}));
  assertEq(sysSize(index), SIZE / 512, 'the kernel has the export size');
  await ok('mkfs.ext4', ['-q', '-F', path]);
  await withMount(path, [], async (mnt) => ok('cp', [ref.file, `${mnt}/a.bin`]));
  const d = await nbdCli(['detach', path]);
  assertEq(d.code, 0, `nbd detach exit code (${d.stderr})`);
  await waitFor(async () => !(await connected(index)), 'detached');
  await srv.kill();
});

test('cli: nbd attach -r --device N: that device, read-only; nbd devices --json lists it; detaching a free device is one line and exit 1', async () => {
  const sock = `${TMP}/cli-ro.sock`;
  const srv = await nbdkitMemory(sock);
  const free = (await status()).filter((d) => !d.connected).map((d) => d.index);
  const want = free.at(-1);
  const a = await nbdCli(['attach', '-r', '--device', `/dev/nbd${want}`, uri(sock)]);
  assertEq(a.stdout.trim(), `/dev/nbd${want}`, `attached on the --device asked for (${a.stderr})`);
  defer(() => disconnect(want).catch(() => {}));
  assertEq(await text('blockdev', ['--getro', `/dev/nbd${want}`]), '1', '-r: the kernel sees it read-only');
  assertEq(
    (await sh('dd', ['if=/dev/zero', `of=/dev/nbd${want}`, 'bs=4k', 'count=1', 'oflag=direct', 'status=none'])).code !== 0,
    true,
    'a write fails',
  );
  const list = JSON.parse((await nbdCli(['devices', '--json'])).stdout);
  const mine = list.find((d) => d.index === want);
  assert(
    mine?.connected === true && mine.size === SIZE && mine['read-only'] && mine.backend === uri(sock),
    `nbd devices --json lists it: ${JSON.stringify(mine)}`,
  );
  await disconnect(want);
  await waitFor(async () => !(await connected(want)), 'detached');
  const again = await nbdCli(['detach', `${want}`]);
  assert(
    again.code === 1 && /is not attached/.test(again.stderr) && again.stderr.trim().split('\n').length === 1,
    `detaching a free device: one line, exit 1 (${again.stderr})`,
  );
  await srv.kill();
});

test('cli: nbd attach memory 64M stays in the foreground serving /dev/nbdN; nbd detach ends it with exit 0', async () => {
  const ref = await refFile('cli-m.bin', 3 * MiB);
  const fg = await nbdForeground(['attach', 'memory', '64M']);
  await ok('mkfs.ext4', ['-q', '-F', fg.path]);
  await withMount(fg.path, [], async (mnt) => ok('cp', [ref.file, `${mnt}/a.bin`]));
  const d = await nbdCli(['detach', fg.path]);
  assertEq(d.code, 0, `nbd detach (${d.stderr})`);
  assertEq((await fg.exited).code, 0, `nbd attach exits 0 once detached (${fg.stderr()})`);
});

test('cli: nbd attach file X: SIGINT flushes and detaches, the file holds the filesystem', async () => {
  const img = `${TMP}/cli-file.img`;
  await ok('truncate', ['-s', `${SIZE}`, img]);
  const ref = await refFile('cli-f.bin', 2 * MiB);
  const fg = await nbdForeground(['attach', 'file', img]);
  await ok('mkfs.ext4', ['-q', '-F', fg.path]);
  await withMount(fg.path, [], async (mnt) => ok('cp', [ref.file, `${mnt}/a.bin`]));
  fg.child.kill('SIGINT');
  assertEq((await fg.exited).code, 0, `nbd attach exits 0 after SIGINT (${fg.stderr()})`);
  await waitFor(async () => !(await connected(fg.index)), 'detached after SIGINT');
  await ok('e2fsck', ['-fn', img]);
  assert((await ok('debugfs', ['-R', 'cat /a.bin', img])).equals(ref.data), 'the file holds a.bin');
});

test('cli: nbd attach qcow2 X: mkfs/mount/write, SIGINT flushes and detaches; qemu-img check is clean and qemu-nbd reads the files back', async () => {
  const img = `${TMP}/cli-disk.qcow2`;
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', img, `${SIZE}`]);
  const ref = await refFile('cli-q.bin', 2 * MiB);
  const fg = await nbdForeground(['attach', 'qcow2', img]);
  await ok('mkfs.ext4', ['-q', '-F', fg.path]);
  await withMount(fg.path, [], async (mnt) => {
    await ok('cp', [ref.file, `${mnt}/a.bin`]);
    await ok('sh', ['-c', `echo hello > ${mnt}/b.txt && rm -f ${mnt}/a.tmp && sync`]);
  });
  fg.child.kill('SIGINT');
  assertEq((await fg.exited).code, 0, `nbd attach exits 0 after SIGINT (${fg.stderr()})`);
  await waitFor(async () => !(await connected(fg.index)), 'detached after SIGINT');
  const check = await sh('qemu-img', ['check', img]);
  assert(check.code === 0 && /No errors were found/.test(check.stdout.toString()), `qemu-img check: ${check.stdout}${check.stderr}`);
  // The same bytes as qemu sees them: qemu-nbd serves the image, qemu-img copies it out raw.
  const sock = `${TMP}/cli-q.sock`;
  const srv = await startServer('qemu-nbd', ['-k', sock, '-f', 'qcow2', '-x', '', '-r', '-t', img], sock);
  const raw = `${TMP}/cli-q.raw`;
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(sock), raw]);
  await srv.kill();
  await ok('e2fsck', ['-fn', raw]);
  assert((await ok('debugfs', ['-R', 'cat /a.bin', raw])).equals(ref.data), 'qemu-nbd reads a.bin back');
  assertEq((await ok('debugfs', ['-R', 'cat /b.txt', raw])).toString().trim(), 'hello', 'b.txt');
});

test('cli: nbd copy onto and from a block device (its size from sysfs); a larger source is refused', async () => {
  const fg = await nbdForeground(['attach', 'memory', '64M']);
  const data = await refFile('cli-c.bin', SIZE);
  const [onto, tooBig] = await Promise.all([
    nbdCli(['copy', '--flush', data.file, fg.path]),
    (async () => {
      const big = `${TMP}/cli-big.img`;
      await ok('truncate', ['-s', `${SIZE + MiB}`, big]);
      return nbdCli(['copy', big, fg.path]);
    })(),
  ]);
  assertEq(onto.code, 0, `nbd copy onto /dev/nbdN (${onto.stderr})`);
  assert(
    tooBig.code === 1 && /smaller than the source/.test(tooBig.stderr),
    `a source larger than the device is refused (${tooBig.stderr})`,
  );
  const out = `${TMP}/cli-copied.img`;
  const from = await nbdCli(['copy', '--json', fg.path, out]);
  assertEq(from.code, 0, `nbd copy from /dev/nbdN (${from.stderr})`);
  assertEq(JSON.parse(from.stdout).bytes, SIZE, 'copied the whole device');
  assert((await readFile(out)).equals(data.data), 'the copy from the device holds what was copied onto it');
  fg.child.kill('SIGTERM');
  assertEq((await fg.exited).code, 0, `nbd attach exits 0 after SIGTERM (${fg.stderr()})`);
});

test('cli: nbd attach --persist reconnects after the server restarts; SIGINT detaches', async () => {
  const img = `${TMP}/cli-persist.img`;
  await ok('truncate', ['-s', `${SIZE}`, img]);
  const sock = `${TMP}/cli-persist.sock`;
  let srv = await startServer('nbdkit', ['-f', '-U', sock, 'file', img], sock);
  const fg = await nbdForeground(['attach', '--persist', '--timeout', '3', uri(sock)]);
  const ref = await refFile('cli-p.bin', 2 * MiB);
  await ddWrite(fg.path, ref.file, 0);
  const more = await refFile('cli-p2.bin', 8 * MiB);
  srv = await restartUnderWrites(fg.path, more.file, 16, srv, () => startServer('nbdkit', ['-f', '-U', sock, 'file', img], sock));
  await waitFor(() => /reconnected/.test(fg.stderr()), `nbd attach to say it reconnected (${fg.stderr()})`, 60_000);
  assert((await ddRead(fg.path, 0, 2)).equals(ref.data), 'data written before the restart');
  assert((await ddRead(fg.path, 16, 8)).equals(more.data), 'the write in flight completed after the reconnect');
  fg.child.kill('SIGINT');
  assertEq((await fg.exited).code, 0, `exit code after SIGINT (${fg.stderr()})`);
  await waitFor(async () => !(await connected(fg.index)), 'detached after SIGINT');
  await srv.kill();
});

test('cli: a device that does not exist, an unreachable server, a bad size: one line, exit 1 or 2', async () => {
  const cases = [
    [['attach', '--device', '/dev/nbd999', 'memory', '1M'], 1, /\/dev\/nbd999 does not exist/],
    [['detach', '/dev/nbd999'], 1, /\/dev\/nbd999 does not exist/],
    [['attach', 'nbd+unix:///?socket=/nonexistent'], 1, /cannot connect to \/nonexistent/],
    [['attach', 'memory', '1Q'], 2, /bad size '1Q'/],
  ];
  const results = await Promise.all(cases.map(([args]) => nbdCli(args)));
  cases.forEach(([args, code, re], i) => {
    const r = results[i];
    assert(
      r.code === code && re.test(r.stderr) && r.stderr.trim().split('\n').length === 1,
      `nbd ${args.join(' ')}: exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`,
    );
  });
});

// ---------------------------------------------------------------- runner

await rm(TMP, { recursive: true, force: true });
await mkdir(TMP, { recursive: true });
console.log(`kernel ${release()} (${process.env.KERNEL_LABEL ?? 'unlabelled'})`);
let passed = 0;
let failed = 0;
const started = Date.now();
for (const t of tests) {
  if (only && !only.test(t.name)) continue;
  const t0 = Date.now();
  try {
    await Promise.race([
      t.fn(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('test timed out after 180 s')), 180_000).unref()),
    ]);
    passed++;
    console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${t.name} (${Date.now() - t0} ms)\n     ${err?.stack ?? err}`);
  } finally {
    for (const c of cleanups.splice(0)) {
      try {
        await c();
      } catch {}
    }
  }
}
// Leave nothing attached even after failures.
for (const d of await status().catch(() => [])) if (d.connected) await disconnect(d.index).catch(() => {});
// run.sh adds up the kernels' lines into one "kernel: N passed, M failed".
const label = process.env.KERNEL_LABEL ?? release();
console.log(`kernel ${label}: ${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failed || passed === 0 ? 1 : 0); // running no test at all is a failure too
