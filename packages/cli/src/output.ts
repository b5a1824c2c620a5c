// Standard output and error for the commands: colour only on a terminal and never
// with NO_COLOR, a closed pipe (`nbd info --map | head -3`) ending the process
// quietly, and traces on stderr when asked for.
import { styleText } from 'node:util';
import { debugEnabled, ExitCode } from './errors.js';

type Style = Parameters<typeof styleText>[0];

/** Where a command writes. Tests and `main()` callers may pass their own streams. */
export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; fd?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
}

/** The process's own streams and environment. */
export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/**
 * Colour for a stream: `--colour`/`--no-colour` decide when given; otherwise colour
 * on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM is dumb.
 */
export function colourWanted(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, flag?: boolean): boolean {
  if (flag !== undefined) return flag;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

/** Paints text when colour is on (node:util's styleText), leaves it as it is otherwise. */
export function painter(on: boolean): (style: Style, text: string) => string {
  return on ? (style, text) => styleText(style, text, { validateStream: false }) : (_style, text) => text;
}

/** Writes everything and resolves once the stream took it (so `process.exit` after it loses nothing). */
export function writeAll(stream: NodeJS.WritableStream, text: string): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  stream.write(text, (err) => (err ? reject(err) : resolve()));
  return promise;
}

/**
 * A reader that went away ends the process quietly (exit 141, as SIGPIPE would),
 * wherever the write came from; other stream errors are left to the writer.
 */
export function quietOnClosedPipe(stream: NodeJS.WritableStream & { on?: unknown }): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(ExitCode.PIPE);
  });
}

/** A debug trace line on stderr under NBD_DEBUG (`nbd info: trace: …`). */
export function tracer(io: Io, command: string): (message: string) => void {
  if (!debugEnabled(io.env)) return () => {};
  return (message) => io.stderr.write(`nbd ${command}: trace: ${message}\n`);
}
