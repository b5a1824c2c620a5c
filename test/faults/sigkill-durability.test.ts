// SIGKILL of the server right after a FUA write, or after a write and a FLUSH, on a
// FileDevice: the data is in the file, and strace shows the order that makes that hold
// across a power cut too: the data's pwrite, then fdatasync on the image, and only then
// the reply's write on the socket (the spec: FUA and FLUSH replies only once durable).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, test } from 'vitest';
import { open } from '@nbd/client';
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

/** Lines of `strace -f -ttt -T -y`: pid, start time, call(fd<target>, args) = ret <duration>. */
function parse(log: string): Syscall[] {
  const out: Syscall[] = [];
  for (const line of log.split('\n')) {
    const m = /^\d+ (\d+\.\d+) (\w+)\(\d+<([^>]*)>,?(.*)\) = (-?\d+).*<(\d+\.\d+)>$/.exec(line);
    if (m) out.push({ t: Number(m[1]), end: Number(m[1]) + Number(m[6]), call: m[2]!, target: m[3]!, args: m[4]! });
  }
  return out;
}

/** Reply magics as strace prints the first bytes: simple, structured, extended. */
const REPLY = /^ "(gDf\\230|f\\2163\\357|n\\212'\\214)/;

async function serveUnderStrace(dir: string): Promise<{ proc: ChildProcess; pid: number; socket: string; image: string; log: string }> {
  const strace = requireTool('strace');
  const socket = join(dir, 's.sock');
  const image = join(dir, 'disk.img');
  const log = join(dir, 'strace.log');
  writeFileSync(image, '');
  truncateSync(image, 16 * MiB);
  const args = ['-f', '-qq', '-ttt', '-T', '-y', '-e', 'trace=pwrite64,pwritev,pwritev2,fdatasync,fsync,write,writev,sendmsg,sendto', '-o', log];
  const proc = spawn(strace, [...args, process.execPath, child, socket, image], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  test('WRITE with FUA: fdatasync completes before the reply is written; the data survives SIGKILL', async () => {
    const { dir, cleanup } = tempDir('nbd-sigkill-');
    cleanups.push(cleanup);
    const s = await serveUnderStrace(dir);
    const conn = await open({ path: s.socket }, { exportName: 'disk' });
    const data = new Uint8Array(65536).fill(0xab);
    await conn.write(data, MiB, { fua: true });
    await kill(s); // right after the reply arrived
    expect(readFileSync(s.image).subarray(MiB, MiB + 65536)).toEqual(Buffer.from(data));

    const calls = parse(readFileSync(s.log, 'utf8'));
    const pwrite = calls.find((c) => c.call.startsWith('pwrite') && c.target === s.image && c.args.endsWith(`, 65536, ${MiB}`));
    expect(pwrite, 'the data pwrite').toBeDefined();
    const sync = calls.find((c) => (c.call === 'fdatasync' || c.call === 'fsync') && c.target === s.image && c.t >= pwrite!.end);
    expect(sync, 'an fdatasync after the pwrite').toBeDefined();
    const reply = calls.find((c) => c.target.startsWith('socket:') && c.t >= pwrite!.t && REPLY.test(c.args));
    expect(reply, "the reply's write").toBeDefined();
    console.log(`FUA: pwrite ${pwrite!.t.toFixed(6)}, fdatasync ${sync!.t.toFixed(6)}–${sync!.end.toFixed(6)}, reply ${reply!.call} ${reply!.t.toFixed(6)}`);
    expect(sync!.end).toBeLessThanOrEqual(reply!.t);
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

    const calls = parse(readFileSync(s.log, 'utf8'));
    const pwrite = calls.find((c) => c.call.startsWith('pwrite') && c.target === s.image && c.args.endsWith(`, 65536, ${2 * MiB}`));
    expect(pwrite, 'the data pwrite').toBeDefined();
    const replies = calls.filter((c) => c.target.startsWith('socket:') && c.t >= pwrite!.t && REPLY.test(c.args));
    expect(replies.length, 'replies to WRITE and FLUSH').toBe(2);
    const sync = calls.find((c) => (c.call === 'fdatasync' || c.call === 'fsync') && c.target === s.image && c.t >= pwrite!.end);
    expect(sync, 'an fdatasync after the pwrite').toBeDefined();
    const flushReply = replies[1]!;
    console.log(`FLUSH: pwrite ${pwrite!.t.toFixed(6)}, WRITE reply ${replies[0]!.t.toFixed(6)}, fdatasync ${sync!.t.toFixed(6)}–${sync!.end.toFixed(6)}, FLUSH reply ${flushReply.t.toFixed(6)}`);
    expect(sync!.end).toBeLessThanOrEqual(flushReply.t);
    await conn.disconnect({ signal: AbortSignal.timeout(100) }).catch(() => undefined);
  });
});
