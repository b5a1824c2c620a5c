// How a command ends: exit codes, the usage error, and the one line printed for
// any failure (a stack and the causes only with NBD_DEBUG=1).
import { NbdError, NbdInvalidArgumentError } from '@nbd/protocol';

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

/** The one line describing `err` (the NbdError family's own messages; Node's for system errors). */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0] || err.name;
    // Errors outside the family (a bug, a Node assertion) name their kind so they are not mistaken for expected ones.
    if (!(err instanceof NbdError) && !('code' in err) && err.name !== 'Error') return `${err.name}: ${msg}`;
    return msg;
  }
  return String(err);
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
