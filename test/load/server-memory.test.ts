// Memory that stays bounded (the core restructure's targets), measured on a server in
// its own process (test/load/server-child.mjs) so its resident set is its own:
// - 1,000 idle connections after a large WRITE hold under 150 MiB;
// - once they close, RSS returns within 50 MiB of what it was before them;
// - 5,000 hostile handshakes keep it under 300 MiB.
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command, encodeClientFlags, encodeOptionRequest, encodeRequest } from '@nbd/protocol';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { tempDir } from '../support/peers.js';

const child = fileURLToPath(new URL('./server-child.mjs', import.meta.url));
const MiB = 1024 * 1024;
let server: ChildProcess;
let path: string;
let cleanup: () => void;
const waiting: ((line: string) => void)[] = [];

async function ask(cmd: string): Promise<string> {
  const line = new Promise<string>((r) => waiting.push(r));
  server.stdin!.write(`${cmd}\n`);
  return line;
}

/** The server's resident memory in MiB, after a full GC. */
async function rss(): Promise<number> {
  await ask('gc');
  return Number((await ask('rss')).split(' ')[1]) / 1024;
}

/** A connection through the handshake (fixed newstyle, GO): it then sits idle. */
function open(): Promise<Socket> {
  const hello = Buffer.concat([encodeClientFlags(3), encodeOptionRequest({ kind: 'go', name: 'mem', requests: [] })]);
  // greeting 18 + INFO_EXPORT 20+12 + INFO_BLOCK_SIZE 20+14 + ACK 20
  const expected = 18 + 32 + 34 + 20;
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let got = 0;
    s.on('error', reject);
    s.on('data', (d) => {
      got += d.length;
      if (got >= expected) resolve(s);
    });
    s.write(hello);
  });
}

beforeAll(async () => {
  ({ dir: path, cleanup } = tempDir('nbd-memory-'));
  path = `${path}/s.sock`;
  server = spawn(process.execPath, ['--expose-gc', child, path, String(256 * MiB)], { stdio: ['pipe', 'pipe', 'inherit'] });
  createInterface({ input: server.stdout! }).on('line', (l) => waiting.shift()?.(l));
  expect(await new Promise<string>((r) => waiting.push(r))).toBe('ready');
});

afterAll(async () => {
  server.stdin!.write('stop\n');
  await new Promise((r) => server.once('exit', r));
  cleanup();
});

test('1,000 idle connections after a large WRITE hold under 150 MiB, and memory returns once they close', async () => {
  const w = await open();
  const payload = Buffer.alloc(4 * MiB - 100, 7);
  w.write(encodeRequest({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0n, length: BigInt(payload.length) }));
  w.write(payload);
  await new Promise((r) => w.once('data', r));
  const before = await rss();
  const idle: Socket[] = [];
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) idle.push(await open());
  const opened = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 2500)); // quiet connections give their large arenas back
  const held = await rss();
  for (const s of idle) s.destroy();
  w.destroy();
  await new Promise((r) => setTimeout(r, 3000));
  const after = await rss();
  console.log(
    `server RSS: ${before.toFixed(1)} MiB before, ${held.toFixed(1)} with 1,000 idle connections (opened one by one in ${opened.toFixed(1)} s), ${after.toFixed(1)} after they closed`,
  );
  expect(held).toBeLessThan(150);
  expect(after - before).toBeLessThan(50);
}, 120_000);

test('5,000 hostile handshakes keep the server under 300 MiB', async () => {
  let peak = 0;
  let x = 12345;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let round = 0; round < 50; round++) {
    await Promise.all(
      Array.from({ length: 100 }, () => {
        // A valid start (or not), then up to 70 KiB of garbage: bad magics, huge claimed lengths.
        const junk = Buffer.alloc(Math.floor(rnd() * 70_000));
        for (let i = 0; i < junk.length; i++) junk[i] = rnd() * 256;
        const parts = [encodeClientFlags(3), encodeOptionRequest({ kind: 'go', name: 'mem', requests: [] }), junk];
        if (rnd() < 0.5) parts.splice(1, 1);
        return new Promise<void>((resolve) => {
          const s = connect(path);
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.end(Buffer.concat(parts));
          setTimeout(() => s.destroy(), 500);
        });
      }),
    );
    if (round % 10 === 9) peak = Math.max(peak, Number((await ask('rss')).split(' ')[1]) / 1024);
  }
  console.log(`server RSS peak under 5,000 hostile handshakes: ${peak.toFixed(1)} MiB`);
  expect(peak).toBeLessThan(300);
  // And it still serves.
  (await open()).destroy();
}, 120_000);
