// Regression tests of the connection's lifecycle found by test/faults.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientFlag, Command, encodeClientFlags, encodeOptionRequest, encodeRequest } from '@nbd/protocol';
import { expect, test } from 'vitest';
import type { Device } from './device.js';
import { listen } from './listener.js';

// test/faults/device-faults.test.ts: a device call that never settles (and ignores the
// connection's aborted signal) kept its connection in 'closing' forever, so the
// server's close() never settled.
test("a device call that never settles does not hold the server's close() forever", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-conn-'));
  const path = join(dir, 's.sock');
  let calls = 0;
  const device: Device = {
    size: 1 << 20,
    readAt: () => {
      calls++;
      return new Promise<void>(() => {});
    },
  };
  const server = await listen({ path }, [{ name: '', size: 1 << 20, device }]);
  const s = connect(path);
  s.on('error', () => {});
  s.write(
    Buffer.concat([
      encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
      encodeOptionRequest({ kind: 'go', name: '', requests: [] }),
      encodeRequest({ type: Command.READ, flags: 0, cookie: 1n, offset: 0n, length: 512n }),
    ]),
  );
  await expect.poll(() => calls).toBe(1);
  s.destroy();
  const t0 = Date.now();
  await server.close();
  expect(Date.now() - t0).toBeLessThan(7000);
  rmSync(dir, { recursive: true, force: true });
}, 15_000);
