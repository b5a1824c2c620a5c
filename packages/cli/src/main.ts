// `nbd`: one command for NBD, its subcommands named after what people already type
// (nbdkit's serve options, nbdinfo's info, nbdcopy's copy, nbd-client's attach).
// main() turns argv into an exit code; bin.ts runs it as a process.
import { readFileSync } from 'node:fs';
import { ATTACH_HELP, DETACH_HELP, DEVICES_HELP, attachCommand, detachCommand, devicesCommand } from './attach.js';
import { COPY_HELP, copyCommand } from './copy.js';
import { ExitCode, UsageError, reportError } from './errors.js';
import { INFO_HELP, infoCommand } from './info.js';
import { type Io, processIo, writeAll } from './output.js';
import { SERVE_HELP, serveCommand } from './serve.js';

/** The version of @nbd/cli, from its package.json. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const MAIN_HELP = `Usage: nbd COMMAND [options] [arguments]

One command for NBD (Network Block Device) servers, clients and /dev/nbdN.

Commands:
  serve    serve devices over NBD            (like nbdkit, qemu-nbd)
  info     show a server's exports           (like nbdinfo)
  copy     copy to or from NBD exports       (like nbdcopy)
  attach   attach an export to /dev/nbdN     (like nbd-client)
  detach   detach /dev/nbdN                  (like nbd-client -d)
  devices  list /dev/nbdN and their state    (like nbd-client -c / lsblk)

'nbd COMMAND --help' explains each one. 'nbd --version' prints the version.
Errors are one line on stderr; NBD_DEBUG=1 adds stacks and traces.
Exit codes: 0 success, 1 failure, 2 usage error.
`;

type Command = (argv: readonly string[], io: Io, signal: AbortSignal) => Promise<number>;

const COMMANDS: Record<string, { run: Command; help: string }> = {
  serve: { run: serveCommand, help: SERVE_HELP },
  info: { run: infoCommand, help: INFO_HELP },
  copy: { run: copyCommand, help: COPY_HELP },
  attach: { run: attachCommand, help: ATTACH_HELP },
  detach: { run: detachCommand, help: DETACH_HELP },
  devices: { run: devicesCommand, help: DEVICES_HELP },
};

/** `--help` or `--version` among a command's options (before any `--`). */
function asked(argv: readonly string[], long: string, short: string): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === long || a === short) return true;
  }
  return false;
}

/**
 * Runs the `nbd` command line `argv` (without node and the script) and resolves with
 * the exit code. Signals abort `signal`; failures are reported on `io.stderr` as one line.
 */
export async function main(argv: readonly string[], io: Io = processIo(), signal: AbortSignal = new AbortController().signal): Promise<number> {
  const [name, ...rest] = argv;
  let command = '';
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      if (name === 'help' && rest[0] !== undefined && COMMANDS[rest[0]]) {
        await writeAll(io.stdout, COMMANDS[rest[0]]!.help);
        return ExitCode.OK;
      }
      await writeAll(name === undefined ? io.stderr : io.stdout, MAIN_HELP);
      return name === undefined ? ExitCode.USAGE : ExitCode.OK;
    }
    if (name === '--version' || name === '-V' || name === 'version') {
      await writeAll(io.stdout, `nbd ${version()}\n`);
      return ExitCode.OK;
    }
    const cmd = COMMANDS[name];
    if (cmd === undefined) {
      if (name.startsWith('-')) throw new UsageError('', `unknown option '${name}' (a command comes first: serve, info, copy, attach, detach, devices)`);
      throw new UsageError('', `unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
    }
    command = name;
    if (asked(rest, '--help', '-h')) {
      await writeAll(io.stdout, cmd.help);
      return ExitCode.OK;
    }
    if (asked(rest, '--version', '-V')) {
      await writeAll(io.stdout, `nbd ${version()}\n`);
      return ExitCode.OK;
    }
    return await cmd.run(rest, io, signal);
  } catch (e) {
    if (signal.aborted && !(e instanceof UsageError)) return interrupted(signal, command, io);
    return reportError(e, command, io.stderr);
  }
}

/** Ended by SIGINT/SIGTERM: a short note and 128 + the signal's number, as shells report it. */
function interrupted(signal: AbortSignal, command: string, io: Io): number {
  const sig = typeof signal.reason === 'string' ? signal.reason : 'SIGINT';
  io.stderr.write(`nbd${command ? ` ${command}` : ''}: interrupted (${sig})\n`);
  return sig === 'SIGTERM' ? 143 : 130;
}
