// `nbd`: one command for NBD, its subcommands named after what people already type
// (nbdkit's serve options, nbdinfo's info, nbdcopy's copy, nbd-client's attach).
// main() turns argv into an exit code; bin.ts runs it as a process.
import { readFileSync } from 'node:fs';
import { ExitCode, reportError, UsageError } from './errors.js';
import { type Io, processIo, writeAll } from './output.js';

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

/**
 * Each command's module loads only when it runs (a start loads one command's
 * packages, not all of them: `nbd info` never loads the server or koffi).
 */
const COMMANDS: Record<string, () => Promise<{ run: Command; help: string }>> = {
  serve: async () => {
    const m = await import('./serve.js');
    return { run: m.serveCommand, help: m.SERVE_HELP };
  },
  info: async () => {
    const m = await import('./info.js');
    return { run: m.infoCommand, help: m.INFO_HELP };
  },
  copy: async () => {
    const m = await import('./copy.js');
    return { run: m.copyCommand, help: m.COPY_HELP };
  },
  attach: async () => {
    const m = await import('./attach.js');
    return { run: m.attachCommand, help: m.ATTACH_HELP };
  },
  detach: async () => {
    const m = await import('./attach.js');
    return { run: m.detachCommand, help: m.DETACH_HELP };
  },
  devices: async () => {
    const m = await import('./attach.js');
    return { run: m.devicesCommand, help: m.DEVICES_HELP };
  },
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
export async function main(
  argv: readonly string[],
  io: Io = processIo(),
  signal: AbortSignal = new AbortController().signal,
): Promise<number> {
  const [name, ...rest] = argv;
  let command = '';
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      const about = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined;
      if (name === 'help' && about !== undefined) {
        await writeAll(io.stdout, (await about()).help);
        return ExitCode.OK;
      }
      await writeAll(name === undefined ? io.stderr : io.stdout, MAIN_HELP);
      return name === undefined ? ExitCode.USAGE : ExitCode.OK;
    }
    if (name === '--version' || name === '-V' || name === 'version') {
      await writeAll(io.stdout, `nbd ${version()}\n`);
      return ExitCode.OK;
    }
    const load = COMMANDS[name];
    if (load === undefined) {
      if (name.startsWith('-'))
        throw new UsageError('', `unknown option '${name}' (a command comes first: serve, info, copy, attach, detach, devices)`);
      throw new UsageError('', `unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
    }
    command = name;
    const cmd = await load();
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
