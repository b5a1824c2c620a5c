// The koffi loader: native callbacks must resume awaiting code at once. Since Node
// 26.4 a native callback gets no microtask drain of its own (nodejs/node#66158), so a
// promise resolved inside koffi's poll callback used to wait for the next unrelated
// wake-up of the event loop (15 s for a netlink reply, bounded only by its timer).
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { ffiLoaded } from './ffi.js';

const probe = fileURLToPath(new URL('../test/poll-resume.mjs', import.meta.url));

describe('ffi', () => {
  test('loads koffi lazily', async () => {
    // Another test file may have loaded it in this worker; a fresh import must not by itself.
    const before = ffiLoaded();
    await import('./index.js');
    expect(ffiLoaded()).toBe(before);
  });

  test(`a promise resolved in a poll callback resumes its awaiter at once, not at the next timer (Node ${process.versions.node})`, async () => {
    // A bare process: this runner's own IPC would wake the loop and hide the stall.
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [probe], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    expect(Number(out.trim())).toBeLessThan(500);
  });
});
