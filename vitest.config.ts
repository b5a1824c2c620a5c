import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (p: string) => fileURLToPath(new URL(`./packages/${p}/src/index.ts`, import.meta.url));

// Tests run against the TypeScript sources, so `vitest` needs no build first.
export default defineConfig({
  resolve: {
    alias: {
      '@nbd/protocol': src('protocol'),
      // Before '@nbd/node', which would otherwise take the subpath as a path under its index.
      '@nbd/node/internal': fileURLToPath(new URL('./packages/node/src/internal.ts', import.meta.url)),
      '@nbd/node': src('node'),
      '@nbd/client': src('client'),
      '@nbd/copy': src('copy'),
      '@nbd/server': src('server'),
      '@nbd/linux': src('linux'),
      '@nbd/devices': src('devices'),
      '@nbd/cli': src('cli'),
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**', 'test/kernel/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One Ceph per run, started by the first test file that needs it (test/support/ceph.ts).
    globalSetup: ['test/support/global-setup.ts'],
  },
});
