// A real Ceph for the tests (ceph.sh beside this file: one monitor, one memstore OSD,
// radosgw with an S3 user, cephx, loopback ports, everything in a temp dir), started at
// most once per test run. The first test file that calls `sharedCeph()` starts it, the
// others wait for it (vitest runs files in parallel processes: a lock directory in the
// run's directory decides which one starts it); the run's global setup stops it at the end
// (global-setup.ts). A run that selects no such file starts no Ceph. A daemon that does
// not start is a test failure, with the daemons' log tails in the message.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PATH, requireTool } from './peers.js';
import { freePort } from './ports.js';

const SCRIPT = fileURLToPath(new URL('./ceph.sh', import.meta.url));

export interface CephCluster {
  /** The directory that holds everything: config, keys, the monitor's store, logs, sockets. */
  dir: string;
  /** ceph.conf, for `ceph -c`, `rbd -c`, librados, qemu's `rbd:…:conf=`. */
  conf: string;
  /** client.admin's keyring. */
  keyring: string;
  /** The S3 gateway (radosgw): path-style, any region name is accepted. */
  s3: { endpoint: string; accessKey: string; secretKey: string; region: string };
}

function script(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  for (const tool of ['ceph-mon', 'ceph-osd', 'radosgw']) requireTool(tool);
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { timeout: 120_000, maxBuffer: 4 << 20, env: { ...process.env, PATH, ...env } },
      (err, stdout, stderr) => (err ? reject(new Error(`ceph.sh ${args[0]} failed: ${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
}

/** Starts a cluster in `dir` (created, empty). `watchPid`: its exit stops the cluster and removes `dir`. */
export async function startCeph(dir: string, watchPid?: number): Promise<CephCluster> {
  mkdirSync(dir, { recursive: true });
  const env = {
    MON_PORT: String(await freePort()),
    RGW_PORT: String(await freePort()),
    ...(watchPid !== undefined ? { WATCH_PID: String(watchPid) } : {}),
  };
  const out = await script(['start', dir], env);
  const vars = Object.fromEntries(out.split('\n').flatMap((l) => (/^[A-Z0-9_]+=/.test(l) ? [l.split(/=(.*)/s).slice(0, 2)] : [])));
  const need = (k: string) =>
    vars[k] ??
    (() => {
      throw new Error(`ceph.sh start printed no ${k}:\n${out}`);
    })();
  return {
    dir,
    conf: need('CEPH_CONF'),
    keyring: need('CEPH_KEYRING'),
    s3: { endpoint: need('S3_ENDPOINT'), accessKey: need('S3_ACCESS_KEY'), secretKey: need('S3_SECRET_KEY'), region: 'us-east-1' },
  };
}

/** Stops the cluster in `dir` (if any daemon of it runs) and waits for the daemons to exit. */
export async function stopCeph(dir: string): Promise<void> {
  await script(['stop', dir]);
}

/** A cluster for one test file alone (its own temp dir), stopped and removed by `stop`. */
export async function privateCeph(): Promise<CephCluster & { stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-ceph-'));
  try {
    const c = await startCeph(join(dir, 'cluster'), process.pid);
    return { ...c, stop: async () => (await stopCeph(c.dir), rmSync(dir, { recursive: true, force: true })) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

// --- one cluster per test run ---

/** What global-setup.ts provides to every test file. */
export interface TestRun {
  /** A directory that lives as long as the run. */
  dir: string;
  /** The vitest process (the cluster's daemons stop when it exits). */
  pid: number;
}

declare module 'vitest' {
  export interface ProvidedContext {
    testRun: TestRun;
  }
}

const CLUSTER = 'ceph';
const READY = 'ceph.json';
const FAILED = 'ceph.failed';
let shared: Promise<CephCluster> | undefined;

/** The run's cluster: started by the first caller in any test process, awaited by the others. */
export function sharedCeph(): Promise<CephCluster> {
  shared ??= (async () => {
    const { inject } = await import('vitest');
    const run = inject('testRun');
    if (run === undefined)
      throw new Error('sharedCeph: no test run directory (vitest.config.ts globalSetup: test/support/global-setup.ts)');
    return startOrWait(run);
  })();
  return shared;
}

async function startOrWait(run: TestRun): Promise<CephCluster> {
  try {
    mkdirSync(join(run.dir, CLUSTER)); // atomic: exactly one process gets here first
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return waitFor(run.dir);
  }
  const publish = (name: string, text: string) => {
    writeFileSync(join(run.dir, `${name}.tmp`), text);
    renameSync(join(run.dir, `${name}.tmp`), join(run.dir, name));
  };
  try {
    const c = await startCeph(join(run.dir, CLUSTER), run.pid);
    publish(READY, JSON.stringify(c));
    return c;
  } catch (e) {
    publish(FAILED, (e as Error).message);
    throw e;
  }
}

async function waitFor(dir: string, timeoutMs = 150_000): Promise<CephCluster> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return JSON.parse(readFileSync(join(dir, READY), 'utf8')) as CephCluster;
    } catch {}
    let failed: string | undefined;
    try {
      failed = readFileSync(join(dir, FAILED), 'utf8');
    } catch {}
    if (failed !== undefined) throw new Error(`the test run's Ceph did not start (another test file started it):\n${failed}`);
    if (Date.now() > deadline) throw new Error(`the test run's Ceph was not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** For the run's teardown: stops the run's cluster if a test started one (or began to). */
export async function stopSharedCeph(runDir: string): Promise<void> {
  try {
    mkdirSync(join(runDir, CLUSTER)); // taken now: no test can start one any more
    return;
  } catch {}
  await stopCeph(join(runDir, CLUSTER));
}
