// Starting and stopping real NBD peers (nbdkit, qemu-nbd, nbd-server) and running
// real clients (nbdinfo, nbdcopy, qemu-io, …) for interop tests. A missing peer is
// a test failure, never a skip: `requireTool` throws with the package to install.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

/** Debian's binaries first: libnbd's Python module exists only for /usr/bin/python3. */
export const PATH = `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}`;
export const PYTHON = '/usr/bin/python3';

const packageOf: Record<string, string> = {
  nbdkit: 'nbdkit',
  'qemu-nbd': 'qemu-utils',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdsh: 'libnbd-bin',
  'nbd-server': 'nbd-server',
  'nbd-client': 'nbd-client',
  fio: 'fio',
  certtool: 'gnutls-bin',
  psktool: 'gnutls-bin',
};

/** Absolute path of a peer tool; throws (fails the test) when it is not installed. */
export function requireTool(name: string): string {
  if (name.startsWith('/')) {
    // e.g. PYTHON, or a tool of the qemu 10 install (test/support/qemu.ts)
    if (existsSync(name)) return name;
    throw new Error(`interop peer "${name}" is missing (scripts/bootstrap.sh --peers installs the peers)`);
  }
  for (const dir of PATH.split(':')) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  throw new Error(`interop peer "${name}" is missing: apt-get install ${packageOf[name] ?? name} (npm test does this)`);
}

/** A fresh temporary directory, removed by the returned cleanup. */
export function tempDir(prefix = 'nbd-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command to completion (never throws on exit status; check `code`). */
export function run(
  cmd: string,
  args: string[],
  opts: { timeout?: number; input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  requireTool(cmd);
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeout ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, PATH, ...opts.env } },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') {
          reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ stdout, stderr, code: err ? Number((err as { code?: number }).code) : 0 });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a command and throws with its output unless it exits 0. */
export async function runOk(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** Runs a Python script with Debian's python3 (which has libnbd's `nbd` module). */
export function runPython(script: string, args: string[] = [], timeout = 60_000): Promise<RunResult> {
  return run(PYTHON, ['-c', script, ...args], { timeout });
}

/** Resolves once something accepts connections on the unix socket `path`. */
export async function waitForSocket(path: string, timeoutMs = 15_000, proc?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode} before listening on ${path}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(path);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${path} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Peer {
  /** NBD URI for the export (`nbd+unix:///NAME?socket=…`). */
  uri: string;
  socket: string;
  dir: string;
  proc: ChildProcess;
  /** Output collected so far (for diagnostics). */
  log: () => string;
  stop: () => Promise<void>;
}

/**
 * Starts a server command in the foreground on a unix socket in a fresh temp dir.
 * `args` may contain `{SOCK}` and `{DIR}`, replaced by the socket path and the dir.
 */
export async function startServer(cmd: string, args: string[], exportName = ''): Promise<Peer> {
  requireTool(cmd);
  const { dir, cleanup } = tempDir(`nbd-${basename(cmd)}-`);
  const socket = join(dir, 'nbd.sock');
  const sub = (a: string) => a.replaceAll('{SOCK}', socket).replaceAll('{DIR}', dir);
  const proc = spawn(cmd, args.map(sub), { env: { ...process.env, PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    cleanup();
  };
  try {
    await waitForSocket(socket, 15_000, proc);
  } catch (e) {
    await stop();
    throw new Error(`${cmd} did not start: ${(e as Error).message}\n${out}`);
  }
  return { uri: unixUri(socket, exportName), socket, dir, proc, log: () => out, stop };
}

/** `nbdkit -f -U SOCK PLUGIN ARGS…` (foreground, unix socket). */
export function startNbdkit(pluginAndArgs: string[], nbdkitOpts: string[] = [], exportName = ''): Promise<Peer> {
  return startServer('nbdkit', ['-f', '-U', '{SOCK}', ...nbdkitOpts, ...pluginAndArgs], exportName);
}

/** `qemu-nbd` serving `image` (persistent, up to 16 clients). */
export function startQemuNbd(image: string, opts: string[] = [], exportName = ''): Promise<Peer> {
  return startServer('qemu-nbd', ['-k', '{SOCK}', '-t', '-e', '16', '-x', exportName, ...opts, image], exportName);
}

/**
 * The reference `nbd-server` with the given `[name] exportname=file` sections.
 * It daemonizes, so the returned `stop` kills it through its pid file.
 */
export async function startNbdServer(
  exports: Record<string, { file: string; readOnly?: boolean; extra?: string }>,
  generic = '',
): Promise<Peer> {
  requireTool('nbd-server');
  const { dir, cleanup } = tempDir('nbd-server-');
  const socket = join(dir, 'nbd.sock');
  const pidFile = join(dir, 'nbd-server.pid');
  const conf = join(dir, 'nbd-server.conf');
  let text = `[generic]\n    unixsock = ${socket}\n    allowlist = true\n${generic}`;
  for (const [name, e] of Object.entries(exports)) {
    text += `[${name}]\n    exportname = ${e.file}\n    readonly = ${e.readOnly ? 'true' : 'false'}\n${e.extra ?? ''}`;
  }
  writeFileSync(conf, text);
  const proc = spawn('nbd-server', ['-C', conf, '-p', pidFile], { env: { ...process.env, PATH }, stdio: 'ignore' });
  const stop = async () => {
    const { readFileSync } = await import('node:fs');
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (pid > 0) process.kill(pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    cleanup();
  };
  await waitForSocket(socket, 15_000);
  return { uri: unixUri(socket, Object.keys(exports)[0] ?? ''), socket, dir, proc, log: () => '', stop };
}

export function unixUri(socket: string, exportName = ''): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${encodeURIComponent(socket)}`;
}
