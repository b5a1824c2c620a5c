// `nbd copy SRC DST`: nbdcopy's command line over @nbd/copy — URIs, files, block
// devices, `-` for stdin/stdout, `null:`; connections, requests, queue and request
// sizes, threads; a progress bar or nbdcopy's machine-readable progress; --allocated,
// --destination-is-zero, --flush, --no-extents, --sparse, --synchronous; --allow-same;
// client TLS; a summary as a line or as JSON.
import { setFlagsFromString } from 'node:v8';
import type { ClientTlsOptions } from '@nbd/client';
import { type CopyResult, copy } from '@nbd/copy';
import { isPowerOfTwo } from '@nbd/protocol';
import { expectPositionals, intOption, parseCommand } from './args.js';
import { UsageError } from './errors.js';
import { type Io, tracer, writeAll } from './output.js';
import { progressOf } from './progress.js';
import { parseSize, roundedSize } from './size.js';
import { isNbdUri, parseUserUri } from './uris.js';

/** `nbd copy --help`. */
export const COPY_HELP = `Usage: nbd copy [options] SOURCE DESTINATION

Copies to, from and between NBD exports, as libnbd's nbdcopy does.

SOURCE, DESTINATION: an NBD URI (nbd://…, nbd+unix://…, nbds://…), a file, a block
device, or - (standard input as the source, standard output as the destination).
SOURCE may also be an http:// or https:// URL (read with Range requests, as nbdkit curl).
DESTINATION may also be null: (read everything, keep nothing).

Options:
  -C, --connections N       connections per NBD endpoint if the server allows multi-conn
                            (default: 4, at most the number of CPUs)
  -R, --requests N          requests in flight per connection (default 32)
      --queue-size SIZE     bytes in flight per connection at most (default: no limit
                            beyond --requests)
      --request-size SIZE   bytes per request (default 512K)
  -S, --sparse SIZE         look for zero blocks of SIZE bytes in the data read (default
                            4K; 0: not at all, the source's map is still used)
      --synchronous         one request at a time, one connection, one thread (slow)
  -T, --threads N           copy on N threads, each with its own connections (default 1)
  -p, --progress            a progress bar on stderr (plain lines when stderr is not a terminal)
      --progress=FD         nbdcopy's machine-readable progress: "N/100" lines on descriptor FD
      --allocated           zero ranges stay allocated on the destination (no holes, NO_HOLE)
      --destination-is-zero, --target-is-zero
                            the destination reads as zeroes already: zero ranges are skipped
      --flush               flush the destination at the end (fsync for files)
      --no-extents          do not ask the source for its allocation map
      --allow-same          copy even when SOURCE and DESTINATION are the same file,
                            block device or export, in place (refused without it: the
                            copy would destroy the data)
      --tls-certificates DIR
                            TLS with X.509: ca-cert.pem, client-cert.pem, client-key.pem
      --tls-psk FILE        TLS with a PSK file of username:hexkey lines (psktool's)
      --tls-username NAME   the PSK identity (default: the URI's user, else FILE's first)
      --tls-verify-peer[=no]
                            check the server's certificate (default yes; X.509 only)
      --json                a JSON summary on stdout (on stderr when DESTINATION is -)
  -v, --verbose             say what is copied where, and the summary, on stderr
  -h, --help                this help
  -V, --version             the version

Zero ranges of the source (from its map, and all-zero blocks) are not copied as data:
they are zeroed on the destination (holes punched in files), or skipped where it reads
as zeroes (a new file, null:). A server without block status (no structured replies:
nbd-server, oldstyle servers) is read in full. Standard output that is a regular file
(nbd copy URI - > disk.img) is written as a file, holes kept; a pipe, a FIFO or a
character device gets every byte in order, zeroes included.
The --tls-* options apply to every NBD endpoint, and require TLS; per endpoint, use the
URI (nbds://, ?tls-certificates=DIR, ?tls-psk-file=FILE, user@ for the PSK identity).
Exit codes: 0 success, 1 failure, 2 usage error; interrupted by SIGINT, SIGTERM or
SIGHUP, it ends by that signal once the endpoints are closed.
nbdcopy equivalent: nbdcopy [-C N] [-R N] [--queue-size N] [--request-size N] [-S N]
[--synchronous] [-T N] [-p|--progress=FD] [--allocated] [--destination-is-zero]
[--flush] [--no-extents] SOURCE DESTINATION
`;

const SPEC = {
  name: 'copy',
  options: {
    connections: { type: 'string', short: 'C' },
    requests: { type: 'string', short: 'R' },
    'queue-size': { type: 'string' },
    'request-size': { type: 'string' },
    sparse: { type: 'string', short: 'S' },
    synchronous: { type: 'boolean' },
    threads: { type: 'string', short: 'T' },
    progress: { type: 'string' },
    allocated: { type: 'boolean' },
    'destination-is-zero': { type: 'boolean' },
    'target-is-zero': { type: 'boolean' },
    flush: { type: 'boolean' },
    'no-extents': { type: 'boolean' },
    'allow-same': { type: 'boolean' },
    'tls-certificates': { type: 'string' },
    'tls-psk': { type: 'string' },
    'tls-username': { type: 'string' },
    'tls-verify-peer': { type: 'string' },
    json: { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
  },
  optionalValues: { progress: 'bar', 'tls-verify-peer': 'yes' },
  bareShorts: { '-p': 'progress' },
} as const;

type Values = ReturnType<typeof parseCommand<typeof SPEC.options>>['values'];

/** An endpoint as the user typed it, checked: a malformed URI is a usage error, not a file name. */
function endpoint(text: string, role: 'source' | 'destination'): string {
  if (text === '') throw new UsageError('copy', `the ${role} is empty`);
  if (isNbdUri(text)) parseUserUri('copy', text);
  else if (/^https?:\/\//i.test(text)) httpEndpoint(text, role);
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text))
    throw new UsageError('copy', `${role} '${text}': not an NBD URI (nbd://, nbds://, nbd+unix://), an http(s) URL nor a file`);
  if (text === 'null:' && role === 'source') throw new UsageError('copy', 'null: can only be the destination');
  return text;
}

/** --request-size, --queue-size and --sparse, checked. */
function sizes(v: Values): { requestSize?: number; queueSize?: number; sparseSize?: number } {
  const size = (name: 'request-size' | 'queue-size' | 'sparse') => {
    const text = v[name];
    return text === undefined ? undefined : parseSize('copy', `--${name}`, text);
  };
  const requestSize = size('request-size');
  if (requestSize !== undefined && (requestSize < 512 || requestSize > 32 << 20)) {
    throw new UsageError('copy', `--request-size: ${requestSize} is outside 512 bytes to 32M`);
  }
  const queueSize = size('queue-size');
  if (queueSize === 0) throw new UsageError('copy', '--queue-size: 0 would leave no request in flight');
  const sparseSize = size('sparse');
  if (sparseSize !== undefined && sparseSize !== 0 && (sparseSize < 512 || !isPowerOfTwo(sparseSize))) {
    throw new UsageError('copy', `--sparse: ${sparseSize} is not 0 nor a power of two of at least 512 bytes`);
  }
  return { requestSize, queueSize, sparseSize };
}

/** The --tls-* options as client TLS (required once any is given), or undefined. */
function tlsOf(v: Values): ClientTlsOptions | undefined {
  const verify = v['tls-verify-peer'];
  if (verify !== undefined && !/^(yes|no|true|false|on|off|1|0)$/i.test(verify))
    throw new UsageError('copy', `--tls-verify-peer: expected yes or no, got '${verify}'`);
  const given = [v['tls-certificates'], v['tls-psk'], v['tls-username'], verify].some((x) => x !== undefined);
  if (!given) return undefined;
  if (v['tls-certificates'] !== undefined && v['tls-psk'] !== undefined)
    throw new UsageError('copy', '--tls-certificates and --tls-psk: give one kind of credentials');
  const tls: ClientTlsOptions = { mode: 'require' };
  if (v['tls-certificates'] !== undefined) tls.certificates = v['tls-certificates'];
  if (v['tls-psk'] !== undefined) tls.pskFile = v['tls-psk'];
  if (v['tls-username'] !== undefined) tls.username = v['tls-username'];
  if (verify !== undefined) tls.verifyPeer = /^(yes|true|on|1)$/i.test(verify);
  return tls;
}

/** An http(s) URL: a source (read with Range requests), never a destination. */
function httpEndpoint(text: string, role: 'source' | 'destination'): void {
  if (role === 'destination') throw new UsageError('copy', `'${text}': an http(s) URL can only be the source`);
  if (!URL.canParse(text)) throw new UsageError('copy', `'${text}' is not a URL`);
}

/** Runs `nbd copy`; resolves with the exit code. */
export async function copyCommand(argv: readonly string[], io: Io, signal: AbortSignal): Promise<number> {
  const { values: v, positionals } = parseCommand(SPEC, argv);
  const [srcText, dstText] = expectPositionals('copy', positionals, ['SOURCE', 'DESTINATION']) as [string, string];
  const src = endpoint(srcText, 'source');
  const dst = endpoint(dstText, 'destination');
  const options = {
    connections: intOption('copy', '--connections', v.connections, { min: 1, max: 64 }),
    inFlight: intOption('copy', '--requests', v.requests, { min: 1, max: 1024 }),
    threads: intOption('copy', '--threads', v.threads, { min: 1, max: 256 }),
    ...sizes(v),
    synchronous: v.synchronous === true,
    allocated: v.allocated === true,
    destinationIsZero: v['destination-is-zero'] === true || v['target-is-zero'] === true ? true : undefined,
    extents: v['no-extents'] !== true,
    flush: v.flush === true,
    allowSame: v['allow-same'] === true,
    tls: tlsOf(v),
  };
  const trace = tracer(io, 'copy');
  const progress = progressOf('copy', v.progress, io.stderr, src !== '-');
  if (v.verbose) io.stderr.write(`nbd copy: ${src} → ${dst}\n`);
  trace(`options ${JSON.stringify(options)}`);
  // A copy is a short I/O-bound run whose per-request JavaScript is small: V8's optimizing
  // compiler cost more CPU than it saved (measured with examples/client-copy, bench/CLIENT-RESULTS.md).
  setFlagsFromString('--max-opt=2');
  const t0 = performance.now();
  let total = 0;
  const result = await copy(src, dst, {
    ...options,
    signal,
    onProgress: progress
      ? (p) => {
          total = p.total;
          progress.update(p.done, p.total);
        }
      : undefined,
  });
  const seconds = (performance.now() - t0) / 1000;
  progress?.finish(result.bytes, Math.max(total, result.bytes));
  const summary = summaryOf(src, dst, result, seconds);
  if (v.progress === 'bar' || v.verbose) io.stderr.write(`nbd copy: ${summaryLine(summary)}\n`);
  if (v.json) await writeAll(dst === '-' ? io.stderr : io.stdout, `${JSON.stringify(summary, null, 2)}\n`);
  return 0;
}

/** The `--json` summary. */
export interface CopySummary {
  source: string;
  destination: string;
  bytes: number;
  'zero-bytes': number;
  seconds: number;
  'bytes-per-second': number;
}

function summaryOf(source: string, destination: string, r: CopyResult, seconds: number): CopySummary {
  const s = Math.round(seconds * 1000) / 1000;
  return {
    source,
    destination,
    bytes: r.bytes,
    'zero-bytes': r.zeroBytes,
    seconds: s,
    'bytes-per-second': seconds > 0 ? Math.round(r.bytes / seconds) : 0,
  };
}

function summaryLine(s: CopySummary): string {
  const zero = s['zero-bytes'] > 0 ? `, ${roundedSize(s['zero-bytes'])} of it zero` : '';
  return `copied ${roundedSize(s.bytes)} in ${s.seconds.toFixed(2)} s (${roundedSize(s['bytes-per-second'])}/s)${zero}`;
}
