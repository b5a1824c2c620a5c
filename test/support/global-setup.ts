// Vitest's global setup (vitest.config.ts), run once per test run in the main process:
// a directory for the run's shared fixtures, provided to every test file as
// `inject('testRun')`, and at the end the run's Ceph stopped if a test file started it
// (ceph.ts `sharedCeph`).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { stopSharedCeph } from './ceph.js';

export default function setup(project: TestProject): () => Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-run-'));
  project.provide('testRun', { dir, pid: process.pid });
  return async () => {
    try {
      await stopSharedCeph(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}
