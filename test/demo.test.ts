// The README's first command runs examples/demo.ts: check it really serves and shows an export.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { PATH } from './support/peers.js';

const demo = fileURLToPath(new URL('../examples/dist/demo.js', import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

test('npm run demo serves an in-memory export and shows it through our client and nbdinfo', async () => {
  expect(existsSync(demo), 'examples must be built (tsc -b) before the tests').toBe(true);
  const port = await freePort();
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      [demo, '--exit', '--port', String(port), '--size', String(64 * 1024 * 1024)],
      { timeout: 30_000, env: { ...process.env, PATH } },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)),
    );
  });
  expect(out).toContain(`Serving nbd://localhost:${port}`);
  expect(out).toContain('read back identical');
  expect(out).toMatch(/4194304 \+1048576 +data/);
  expect(out).toContain('export-size: 67108864');
});
