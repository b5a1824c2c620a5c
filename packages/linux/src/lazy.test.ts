import { createRequire } from 'node:module';
import { expect, test } from 'vitest';

// Importing the package must not load koffi: on macOS/Windows that would throw.
test('importing @nbd/linux does not load koffi', async () => {
  const linux = await import('./index.js');
  expect(typeof linux.loopback).toBe('function');
  expect(linux.ffiLoaded()).toBe(false);
  const cache = createRequire(import.meta.url).cache;
  expect(Object.keys(cache).some((k) => k.includes('koffi'))).toBe(false);
});
