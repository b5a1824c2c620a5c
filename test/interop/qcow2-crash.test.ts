// A qcow2 image survives SIGKILL of the server in the middle of writes: each round
// writes, zeroes and trims disjoint slots through two connections, flushes, then
// fires a burst of writes and kills the server while they are in flight. After every
// kill `qemu-img check` finds no corruption (leaked clusters are allowed, as after a
// qemu crash), every slot as it was at the last completed FLUSH reads back, and the
// image opens and takes writes again for the next round.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { join } from 'node:path';
import { type Connection, open } from '@nbd/client';
import { openQcow2 } from '@nbd/devices';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PATH, run, tempDir, unixUri, waitForSocket } from '../support/peers.js';
import { QEMU_10, qemuTool } from '../support/qemu.js';
import { createImage, MiB } from './qcow2-support.js';

const fixture = new URL('./fixtures/qcow2-server.mjs', import.meta.url).pathname;
const SLOT = 256 * 1024;

/** What a slot must read as once flushed: its bytes, or zeroes. */
interface Slot {
  offset: number;
  data: Uint8Array;
}

describe.each([
  ['64 KiB clusters', [] as string[]],
  ['extended L2, 2 MiB clusters', ['extended_l2=on', 'cluster_size=2M']],
  ['512 B clusters', ['cluster_size=512']],
])('SIGKILL of the server during qcow2 writes (%s)', (_name, opts) => {
  const tmp = tempDir('nbd-qcow2-crash-');
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
  });
  afterAll(() => tmp.cleanup());

  async function start(image: string, n: number): Promise<string> {
    const socket = join(tmp.dir, `s${n}.sock`);
    child = spawn(process.execPath, [fixture, socket, image], { env: { ...process.env, PATH }, stdio: ['ignore', 'pipe', 'inherit'] });
    await waitForSocket(socket, 15_000, child);
    return unixUri(socket);
  }

  it('check finds no corruption and every flushed slot reads back, kill after kill', async () => {
    const image = join(tmp.dir, 'disk.qcow2');
    const size = 64 * MiB;
    await createImage(QEMU_10, image, size, opts);
    const slots = size / SLOT;
    const expected = new Map<number, Slot>();
    let nextSlot = 0;
    for (let round = 0; round < 4; round++) {
      const uri = await start(image, round);
      const conns = [await open(uri), await open(uri)];
      const conn = (i: number): Connection => conns[i % 2]!;
      // Writes into fresh slots (unaligned, partial clusters), zeroes and trims of older ones.
      const ops: Promise<void>[] = [];
      for (let i = 0; i < 24 && nextSlot < slots - 40; i++) {
        const slot = nextSlot++;
        const offset = slot * SLOT + randomInt(0, 60_000);
        const data = randomBytes(randomInt(1, 150_000));
        expected.set(slot, { offset, data });
        ops.push(conn(i).write(data, offset));
      }
      const older = [...expected.keys()].filter((s) => s < nextSlot - 24);
      for (const [i, slot] of older.slice(0, 6).entries()) {
        const s = expected.get(slot)!;
        const op = i % 2 === 0 ? conn(i).zero(s.offset, s.data.length) : conn(i).trim(slot * SLOT, SLOT);
        // A trim of whole clusters reads as zeroes (version 3); a partial one is ignored, so expect what covers it.
        ops.push(op);
        if (i % 2 === 0) expected.set(slot, { offset: s.offset, data: new Uint8Array(s.data.length) });
        else expected.delete(slot);
      }
      await Promise.all(ops);
      await conns[round % 2]!.flush();
      // A burst that is never flushed, killed in flight (into slots nobody checks).
      const burst: Promise<void>[] = [];
      for (let i = 0; i < 64; i++) {
        const slot = slots - 1 - (i % 40);
        burst.push(
          conn(i)
            .write(randomBytes(randomInt(1, 200_000)), slot * SLOT + randomInt(0, 50_000))
            .catch(() => {}),
        );
      }
      await new Promise((r) => setTimeout(r, randomInt(1, 15)));
      const c = child!;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
      child = undefined;
      await Promise.allSettled(burst);
      for (const k of conns) await k.disconnect().catch(() => {});

      const check = await run(qemuTool(QEMU_10, 'qemu-img'), ['check', image]);
      const out = check.stdout + check.stderr;
      expect([0, 3], out).toContain(check.code); // 3: leaked clusters only
      expect(out).not.toMatch(/\bERROR\b|corrupt/);
      const dev = await openQcow2(image, { readOnly: true });
      try {
        for (const s of expected.values()) {
          const got = new Uint8Array(s.data.length);
          await dev.readAt(got, s.offset, { fua: false, signal: new AbortController().signal });
          expect(Buffer.compare(got, s.data), `slot at ${s.offset} after round ${round}`).toBe(0);
        }
      } finally {
        await dev.close();
      }
    }
  });
});
