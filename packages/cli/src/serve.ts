// `nbd serve`: devices (and filters) served over NBD with nbdkit's habits — `-p`,
// `-i`, `-U` (`-U -` a private socket), `--listen URI`, `-e NAME`, `-r`, several
// exports at once, TLS, worker threads, `--run CMD` as a captive server,
// `--print-uri`; in the foreground, logs on stderr, `-v` adds a protocol trace.
import { NbdInvalidArgumentError, tieToSignal } from '@nbd/protocol';
import type { Export, Logger, ServeOptions } from '@nbd/server';
import { ExitCode, UsageError } from './errors.js';
import { type Listener, startListeners } from './listen.js';
import { type Io, writeAll } from './output.js';
import { runCaptive } from './run.js';
import { arityOf, buildExport, DEVICE_WORDS } from './serve-devices.js';
import { FILTER_WORDS } from './serve-filters.js';
import type { Built } from './serve-params.js';
import { parseServe, type ServeSpec } from './serve-spec.js';
import { traceDevice } from './trace.js';

const deviceLines = () =>
  Object.values(DEVICE_WORDS)
    .map((w) => (w.usage.length < 28 ? `  ${w.usage.padEnd(28)}${w.summary}` : `  ${w.usage}\n  ${''.padEnd(28)}${w.summary}`))
    .join('\n');
const filterLines = () =>
  Object.entries(FILTER_WORDS)
    .map(([name, w]) => `  ${name.padEnd(11)}${w.summary}${w.params ? `\n  ${''.padEnd(11)}${w.params}` : ''}`)
    .join('\n');

/** `nbd serve --help`. */
export const SERVE_HELP = `Usage: nbd serve [options] [-e NAME] DEVICE [ARGS] [key=value…] [-e NAME2 DEVICE2 …]

Serves devices over NBD in the foreground until Ctrl-C (or until --run's command ends).

Devices:
${deviceLines()}

Filters (--filter NAME, repeatable; the first is the top, as in nbdkit):
${filterLines()}

Each device word starts an export; several exports may be served at once, each after
-e NAME (the first is also the default export ""). key=value parameters after a device
belong to its export (to the device or its filters), as in nbdkit:
  nbd serve --filter cow --filter partition file disk.img partition=1

Listening (default: TCP port 10809 on every address):
  -p, --port PORT          TCP port (0: any free port; see --print-uri)
  -i, --ipaddr ADDR        listen on this address only
  -U, --unix PATH          a unix socket; -U - makes a private one (removed on exit)
      --listen URI         nbd://[HOST][:PORT] or nbd+unix:///?socket=PATH (repeatable); nbds:// and
                           nbds+unix:// require TLS (with --tls-certificates or --tls-psk)
      --print-uri          print the URI clients use, once listening, on stdout
Exports:
  -e, --export NAME        the name of the export (default: "")
  -D, --description TEXT   what NBD_OPT_LIST says about it
      --filter NAME        a filter over the export's device (see above)
      --format raw|qcow2|auto  the format of the export's file (default raw; auto probes,
                           and serves an image probed raw read-only)
      --backing, --no-backing  follow a qcow2 backing file, or serve the top layer alone
  -r, --read-only          serve every export read-only
  -o, --oldstyle           the oldstyle handshake (one export, no names)
TLS (nbdkit's options):
      --tls off|on|require    on: offer TLS; require: refuse plaintext (default once credentials are given)
      --tls-certificates DIR  ca-cert.pem, server-cert.pem, server-key.pem (nbdkit's layout)
      --tls-psk FILE          a PSK file of username:hexkey lines (psktool's format)
      --tls-verify-peer       ask clients for a certificate signed by the CA
Running:
  -t, --threads N          serve connections on N worker threads (devices must be shareable)
      --run CMD            run CMD with $uri, $nbd, $exportname, $port, $unixsocket set;
                           stop when it exits and exit with its exit code
  -v, --verbose            log connections and trace every request on stderr
  -f, --foreground         accepted for nbdkit's sake: nbd serve always stays in the foreground
  -h, --help               this help
  -V, --version            the version

Examples:
  nbd serve memory 1G
  nbd serve -U - memory 1G --run 'nbdinfo $uri'
  nbd serve -p 10810 -r file disk.img
  nbd serve -e a memory 64M -e b file disk.img
  nbd serve --format qcow2 --backing file disk.qcow2
  nbd serve --filter offset file disk.img offset=1M range=100M
  nbd serve -t 2 sparse-random 1G seed=7

Exit codes: 0 success (also after Ctrl-C), 1 failure, 2 usage error; with --run, CMD's.
nbdkit equivalent: nbdkit [-p PORT] [-U SOCKET] [-e NAME] [-r] [--run CMD] PLUGIN [ARGS]
`;

function stderrLogger(io: Io, verbose: boolean): Logger {
  const write = (m: string) => void io.stderr.write(`nbd serve: ${m}\n`);
  const nothing = () => {};
  return { debug: verbose ? write : nothing, info: verbose ? write : nothing, warn: write, error: write };
}

/** Builds every export's device; if one fails, those built are closed. */
async function buildAll(spec: ServeSpec, io: Io, reports: (() => void)[]): Promise<{ exports: Export[]; built: Built[] }> {
  const built: Built[] = [];
  const ctx = { threads: spec.threads, readOnly: spec.readOnly, command: 'serve', atExit: (r: () => void) => void reports.push(r) };
  try {
    for (const e of spec.exports) built.push(await buildExport(e, ctx));
  } catch (e) {
    await Promise.allSettled(built.map((b) => b.device.close?.()));
    throw e;
  }
  const log = (line: string) => void io.stderr.write(`nbd serve: ${line}\n`);
  const exports = spec.exports.map((e, i): Export => {
    const b = built[i]!;
    const name = e.name ?? '';
    // The trace wraps the device, which cannot then be shared with worker threads.
    const device = spec.verbose && spec.threads === 0 ? traceDevice(b.device, name, log) : b.device;
    return { name, description: e.description ?? b.description, size: b.size, device };
  });
  return { exports, built };
}

function serveOptions(spec: ServeSpec, logger: Logger): ServeOptions {
  const o: ServeOptions = { logger, readOnly: spec.readOnly, threads: spec.threads };
  if (spec.oldstyle) o.handshake = 'oldstyle';
  if (spec.tls) {
    const t = spec.tls;
    o.tls = { mode: t.mode, verifyPeer: t.verifyPeer };
    if (t.certificates !== undefined) o.tls.certificates = t.certificates;
    if (t.pskFile !== undefined) o.tls.pskFile = t.pskFile;
  }
  return o;
}

/**
 * Starts the listeners. What the server library refuses at start (an export name over
 * 4096 bytes, two exports of one name, …) came from this command line: a usage error.
 */
async function listenOrUsage(spec: ServeSpec, exports: Export[], opts: ServeOptions): Promise<Listener[]> {
  try {
    return await startListeners(spec.listen, exports, opts, spec.tls?.mode === 'require');
  } catch (e) {
    if (e instanceof NbdInvalidArgumentError && !(e instanceof UsageError)) {
      throw new UsageError('serve', e.message.replace(/^serve: /, ''), { cause: e });
    }
    throw e;
  }
}

/** Runs `nbd serve`; resolves with the exit code once it stopped. */
export async function serveCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const spec = parseServe(argv, arityOf());
  if (spec.run !== undefined && spec.run.trim() === '') throw new UsageError('serve', '--run needs a command');
  const reports: (() => void)[] = [];
  const { exports, built } = await buildAll(spec, io, reports);
  let listeners: Listener[] = [];
  try {
    listeners = await listenOrUsage(spec, exports, serveOptions(spec, stderrLogger(io, spec.verbose)));
    const first = listeners[0]!;
    const defaultName = exports[0]!.name;
    if (spec.printUri) await writeAll(io.stdout, `${first.uriOf(defaultName)}\n`);
    // Where clients go, said once (not with --run, whose command's output comes next).
    if (spec.run === undefined || spec.verbose) {
      const what = exports.map((e) => `"${e.name}" (${e.size} bytes)`).join(', ');
      for (const l of listeners)
        io.stderr.write(`nbd serve: serving ${what} on ${l.uriOf(defaultName)}${spec.run === undefined ? '; Ctrl-C stops' : ''}\n`);
    }
    if (spec.run !== undefined) {
      const env = { uri: first.uriOf(defaultName), exportname: defaultName, port: first.port, unixsocket: first.unixsocket };
      const tls = spec.tls?.mode === 'require' ? '2' : spec.tls?.mode === 'on' ? '1' : undefined;
      return await runCaptive(spec.run, tls !== undefined ? { ...env, tls } : env, signal, io.stderr);
    }
    // Until a signal, or until every listener closed by itself.
    const stopped = Promise.withResolvers<void>();
    const untie = tieToSignal(signal, () => stopped.resolve());
    void Promise.all(listeners.map((l) => l.server.closed)).then(() => stopped.resolve());
    await stopped.promise;
    untie();
    return ExitCode.OK;
  } finally {
    await Promise.allSettled(listeners.map((l) => l.close()));
    await Promise.allSettled(built.map((b) => b.device.close?.()));
    for (const report of reports) report();
  }
}
