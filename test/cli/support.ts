// Running the built `nbd` command (packages/cli/dist/bin.js, made by tsc -b) as a
// user would: as a process, with its exit code, stdout and stderr.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PATH, type Peer, startServer } from '../support/peers.js';

/** The built binary. */
export const NBD_BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));

/** `node …/bin.js` as a shell word list, for `--run` commands and shell pipelines. */
export const NBD_SHELL = `'${process.execPath}' '${NBD_BIN}'`;

export interface NbdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout as bytes (copies to `-`). */
  bytes: Buffer;
}

export interface NbdRunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  timeout?: number;
  /** Extra descriptors for the child (index 3 upward), as spawn's stdio entries. */
  extraStdio?: ('pipe' | 'ignore')[];
  onSpawn?: (child: ChildProcess) => void;
}

/** Fails clearly when the CLI was not built. */
export function requireBuilt(): void {
  if (!existsSync(NBD_BIN)) throw new Error(`${NBD_BIN} is missing: build first (pnpm exec tsc -b)`);
}

/** Runs `nbd ARGS…` to completion. */
export function nbd(args: string[], opts: NbdRunOptions = {}): Promise<NbdResult> {
  requireBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [NBD_BIN, ...args], {
      env: { ...process.env, PATH, NO_COLOR: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe', ...(opts.extraStdio ?? [])],
    });
    opts.onSpawn?.(child);
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout ?? 60_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const bytes = Buffer.concat(out);
      resolve({ code, signal, stdout: bytes.toString(), stderr: err, bytes });
    });
    child.stdin!.on('error', () => {}); // a command that does not read its input
    child.stdin!.end(opts.input);
  });
}

/** Runs `nbd ARGS…` and throws with its output unless it exits 0. */
export async function nbdOk(args: string[], opts: NbdRunOptions = {}): Promise<NbdResult> {
  const r = await nbd(args, opts);
  if (r.code !== 0) throw new Error(`nbd ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** `nbd serve -U SOCK ARGS…` in the background, as a Peer (stop() sends SIGTERM). */
export function startNbdServe(args: string[], exportName = ''): Promise<Peer> {
  requireBuilt();
  return startServer(process.execPath, [NBD_BIN, 'serve', '-U', '{SOCK}', ...args], exportName);
}

/** A path inside a Peer's directory. */
export const inDir = (p: Peer, name: string) => join(p.dir, name);
