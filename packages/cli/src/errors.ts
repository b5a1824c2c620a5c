// How a command ends: exit codes, the usage error, and the one line printed for
// any failure (a stack and the causes only with NBD_DEBUG=1).
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { NbdError, NbdInvalidArgumentError, NbdOptionError, OptionReply } from '@nbd/protocol';

/** Exit codes of every command: 0 success, 1 failure, 2 usage error (bad flags, sizes, URIs). */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  /** Ended by a closed pipe on standard output (128 + SIGPIPE, what a C tool killed by SIGPIPE reports). */
  PIPE: 141,
} as const;

/** The command line itself is wrong: an unknown flag, a missing argument, a bad size or URI. Exit code 2. */
export class UsageError extends NbdInvalidArgumentError {
  override name = 'UsageError';
  /** The command whose `--help` explains the usage (`serve`, `info`, …); empty for `nbd` itself. */
  readonly command: string;

  constructor(command: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.command = command;
  }
}

/** True when NBD_DEBUG asks for stacks and traces. */
export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.NBD_DEBUG;
  return v !== undefined && v !== '' && v !== '0';
}

/** The exit code for an error that ended a command. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return ExitCode.USAGE;
  if (isPipeError(err)) return ExitCode.PIPE;
  return ExitCode.FAILURE;
}

/** A write to a reader that went away (`nbd info --map | head`). */
export function isPipeError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED') return true;
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== err && isPipeError(cause);
}

/** The one line describing `err` (the NbdError family's own messages; a system error's file or address and why). */
export function describe(err: unknown): string {
  if (err instanceof NbdOptionError && err.reply === OptionReply.ERR_UNKNOWN)
    return `${err.message} (the server has no such export; 'nbd info --list' shows the ones it has)`;
  const system = systemError(err);
  if (system !== undefined) return system;
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0] || err.name;
    // Errors outside the family (a bug, a Node assertion) name their kind so they are not mistaken for expected ones.
    if (!(err instanceof NbdError) && !('code' in err) && err.name !== 'Error') return `${err.name}: ${msg}`;
    return msg;
  }
  return String(err);
}

/** What people call what a failed system call was doing to a path. */
const VERBS: Record<string, string> = { open: 'open', stat: 'read', lstat: 'read', scandir: 'list', mkdir: 'create', unlink: 'remove' };

/**
 * A Node system error as one sentence, its code kept: `cannot open /x.img: no such file
 * or directory (ENOENT)`, `cannot listen on port 10809: address already in use
 * (EADDRINUSE); …`, instead of `ENOENT: no such file or directory, open '/x.img'`.
 */
function systemError(err: unknown): string | undefined {
  if (!(err instanceof Error) || err instanceof NbdError) return undefined;
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (typeof e.code !== 'string' || typeof e.syscall !== 'string' || typeof e.errno !== 'number') return undefined;
  const words = e.code === 'EISDIR' ? 'it is a directory' : (getSystemErrorMap().get(e.errno)?.[1] ?? e.code);
  if (e.syscall === 'listen' || e.syscall === 'bind') {
    const unix = e.address?.startsWith('/') === true;
    const anyAddress = e.address === undefined || e.address === '::' || e.address === '0.0.0.0';
    const where = unix || !e.port ? e.address : anyAddress ? `port ${e.port}` : `${e.address}:${e.port}`;
    // Node reports a unix socket in a missing directory as EACCES.
    if (unix && !existsSync(dirname(e.address!))) return `cannot listen on ${where}: the directory ${dirname(e.address!)} does not exist`;
    const hint = listenHint(e.code, unix, e.port);
    return `cannot listen on ${where}: ${words} (${e.code})${hint ? `; ${hint}` : ''}`;
  }
  if (typeof e.path === 'string') return `cannot ${VERBS[e.syscall] ?? e.syscall} ${e.path}: ${words} (${e.code})`;
  return undefined;
}

function listenHint(code: string, unix: boolean, port: number | undefined): string {
  if (code === 'EADDRINUSE') return unix ? 'another server listens on this socket' : 'another server has this port (-p 0 picks a free one)';
  if (code === 'EACCES' && !unix && port !== undefined && port < 1024) return 'ports below 1024 need root';
  if (code === 'EADDRNOTAVAIL') return 'no network interface of this machine has that address';
  return '';
}

/** Everything known about `err` for NBD_DEBUG: the stack and each cause's. */
export function debugReport(err: unknown): string {
  const lines: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && depth < 8; depth++) {
    const prefix = depth === 0 ? '' : 'caused by: ';
    lines.push(prefix + (e instanceof Error ? (e.stack ?? `${e.name}: ${e.message}`) : String(e)));
    e = e instanceof Error ? e.cause : undefined;
  }
  return lines.join('\n');
}

/**
 * Prints why a command failed: `nbd <command>: <message>` on one line, a hint to
 * `--help` for usage errors, and stacks under NBD_DEBUG. Nothing for a closed pipe.
 */
export function reportError(err: unknown, command: string, stderr: NodeJS.WritableStream = process.stderr): number {
  const code = exitCodeOf(err);
  if (code === ExitCode.PIPE) return code;
  const who = command === '' ? 'nbd' : `nbd ${command}`;
  // The libraries name themselves (`copy: …`); after `nbd copy:` that would say it twice.
  const what = describe(err);
  let line = `${who}: ${command !== '' && what.startsWith(`${command}: `) ? what.slice(command.length + 2) : what}`;
  if (err instanceof UsageError) line += ` (see '${err.command === '' ? 'nbd' : `nbd ${err.command}`} --help')`;
  stderr.write(`${line}\n`);
  if (debugEnabled()) stderr.write(`${debugReport(err)}\n`);
  return code;
}
