// SIGKILL of the server right after a FUA write, or after a write and a FLUSH, on a
// FileDevice (@nbd/devices): the data is in the file, and strace shows the order that
// makes that hold across a power cut too: the data made durable (a pwritev2 with
// RWF_DSYNC, FileDevice's native FUA, or a write and then fdatasync on the image), and
// only then the reply's write on the socket (the spec: FUA and FLUSH replies only once
// the data is durable).
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { open } from '@nbd/client';
import { afterEach, describe, expect, test } from 'vitest';
import { requireTool, tempDir } from '../support/peers.js';

const MiB = 1024 * 1024;
const child = fileURLToPath(new URL('./file-server-child.mjs', import.meta.url));
let cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups) c();
  cleanups = [];
});

interface Syscall {
  t: number;
  end: number;
  call: string;
  target: string;
  args: string;
}

/**
 * Lines of `strace -ff -ttt -T -y`, one file per thread (so no call is split into
 * "unfinished" and "resumed" halves by another thread's): start time,
 * call(fd<target>, args) = ret <duration>; all threads' calls in time order.
 */
function parse(logPrefix: string): Syscall[] {
  const dir = dirname(logPrefix);
  const out: Syscall[] = [];
  for (const file of readdirSync(dir).filter((f) => f.startsWith(`${basename(logPrefix)}.`))) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      // `= ?` without a duration: the call was under way when SIGKILL came (strace saw no return).
      const m = /^(\d+\.\d+) (\w+)\(\d+<([^>]*)>,?(.*)\) = (-?\d+|\?)(?:.*<(\d+\.\d+)>)?$/.exec(line);
      if (m) out.push({ t: Number(m[1]), end: Number(m[1]) + Number(m[6] ?? 0), call: m[2]!, target: m[3]!, args: m[4]! });
    }
  }
  return out.sort((a, b) => a.t - b.t);
}

/** The data write at `offset` to `image` (pwrite64, pwritev or pwritev2: offset is the last number). */
function dataWrite(calls: Syscall[], image: string, offset: number): Syscall | undefined {
  return calls.find(
    (c) => c.call.startsWith('pwrite') && c.target === image && new RegExp(`, ${offset}(, RWF_\\w+(\\|RWF_\\w+)*)?$`).test(c.args),
  );
}

/** When the data written by `write` was durable: its own end with RWF_DSYNC/RWF_SYNC, else the end of the next fdatasync/fsync. */
function durableAt(calls: Syscall[], image: string, write: Syscall): { at: number; how: string } | undefined {
  if (/RWF_D?SYNC/.test(write.args)) return { at: write.end, how: `${write.call} with RWF_DSYNC` };
  const sync = calls.find((c) => (c.call === 'fdatasync' || c.call === 'fsync') && c.target === image && c.t >= write.end);
  return sync && { at: sync.end, how: `${write.call}, then ${sync.call}` };
}

/** Reply magics as strace prints the first bytes (of a write, or of writev's first buffer): simple, structured, extended. */
const REPLY = /^ (\[\{iov_base=)?"(gDf\\230|f\\2163\\357|n\\212'\\214)/;

async function serveUnderStrace(
  dir: string,
  mode = '',
): Promise<{ proc: ChildProcess; pid: number; socket: string; image: string; log: string }> {
  const strace = requireTool('strace');
  const socket = join(dir, 's.sock');
  const image = join(dir, 'disk.img');
  const log = join(dir, 'strace.log');
  writeFileSync(image, '');
  truncateSync(image, 16 * MiB);
  const args = [
    '-ff',
    '-qq',
    '-ttt',
    '-T',
    '-y',
    '-e',
    'trace=pwrite64,pwritev,pwritev2,fdatasync,fsync,write,writev,sendmsg,sendto',
    '-o',
    log,
  ];
  const proc = spawn(strace, [...args, process.execPath, child, socket, image, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await new Promise<string>((resolve) => {
    createInterface({ input: proc.stdout! }).once('line', resolve);
    proc.once('exit', (c) => resolve(`exited ${c}`));
  });
  const m = /^ready (\d+)$/.exec(first);
  if (!m) throw new Error(`server under strace: ${first}`);
  return { proc, pid: Number(m[1]), socket, image, log };
}

async function kill(s: { proc: ChildProcess; pid: number }): Promise<void> {
  const exited = new Promise((r) => s.proc.once('exit', r));
  process.kill(s.pid, 'SIGKILL');
  await exited; // strace ends once its tracee is gone, with the log written
}

describe('SIGKILL after FUA, and after FLUSH, on a FileDevice', () => {
  test.each([
    ['native (pwritev2 RWF_DSYNC)', ''],
    ['emulated by the server (write, then fdatasync)', 'emulated-fua'],
  ])('WRITE with FUA, %s: durable before the reply is written; the data survives SIGKILL', async (_how, mode) => {
    const { dir, cleanup } = tempDir('nbd-sigkill-');
    cleanups.push(cleanup);
    const s = await serveUnderStrace(dir, mode);
    const conn = await open({ path: s.socket }, { exportName: 'disk' });
    const data = new Uint8Array(65536).fill(0xab);
    await conn.write(data, MiB, { fua: true });
    await kill(s); // right after the reply arrived
    expect(readFileSync(s.image).subarray(MiB, MiB + 65536)).toEqual(Buffer.from(data));

    const calls = parse(s.log);
    const write = dataWrite(calls, s.image, MiB);
    expect(write, 'the data write').toBeDefined();
    const durable = durableAt(calls, s.image, write!);
    expect(durable, 'the data made durable').toBeDefined();
    const reply = calls.find((c) => c.target.startsWith('socket:') && c.t >= write!.t && REPLY.test(c.args));
    const socketCalls = calls.filter((c) => c.target.startsWith('socket:')).map((c) => `${c.call}${c.args.slice(0, 40)}`);
    expect(reply, `the reply's write among ${JSON.stringify(socketCalls)}`).toBeDefined();
    if (mode) expect(durable!.how).toMatch(/fdatasync/);
    else expect(durable!.how).toMatch(/RWF_DSYNC/);
    console.log(`FUA: ${durable!.how} durable at ${durable!.at.toFixed(6)}, reply ${reply!.call} at ${reply!.t.toFixed(6)}`);
    expect(durable!.at).toBeLessThanOrEqual(reply!.t);
    await conn.disconnect({ signal: AbortSignal.timeout(100) }).catch(() => undefined);
  });

  test('WRITE then FLUSH: the FLUSH reply follows an fdatasync that follows the data; the data survives SIGKILL', async () => {
    const { dir, cleanup } = tempDir('nbd-sigkill-');
    cleanups.push(cleanup);
    const s = await serveUnderStrace(dir);
    const conn = await open({ path: s.socket }, { exportName: 'disk' });
    const data = new Uint8Array(65536).fill(0xcd);
    await conn.write(data, 2 * MiB);
    await conn.flush();
    await kill(s);
    expect(readFileSync(s.image).subarray(2 * MiB, 2 * MiB + 65536)).toEqual(Buffer.from(data));

    const calls = parse(s.log);
    const write = dataWrite(calls, s.image, 2 * MiB);
    expect(write, 'the data write').toBeDefined();
    expect(write!.args).not.toMatch(/RWF_D?SYNC/); // no FUA asked: durability comes from FLUSH
    const replies = calls.filter((c) => c.target.startsWith('socket:') && c.t >= write!.t && REPLY.test(c.args));
    expect(replies.length, 'replies to WRITE and FLUSH').toBe(2);
    const durable = durableAt(calls, s.image, write!);
    expect(durable, 'an fdatasync after the write').toBeDefined();
    const flushReply = replies[1]!;
    console.log(
      `FLUSH: ${durable!.how} durable at ${durable!.at.toFixed(6)}, WRITE reply ${replies[0]!.t.toFixed(6)}, FLUSH reply ${flushReply.t.toFixed(6)}`,
    );
    expect(durable!.at).toBeLessThanOrEqual(flushReply.t);
    await conn.disconnect({ signal: AbortSignal.timeout(100) }).catch(() => undefined);
  });
});
