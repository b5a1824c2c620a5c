// A minimal nbdcopy over @nbd/copy, kept for the benchmarks (bench/client-copy.sh runs it,
// also in an old commit's build). For the real command line use `nbd copy` (@nbd/cli).
//   node examples/dist/client-copy.js [--threads=N] [--connections=N] [--requests=N]
//        [--request-size=BYTES] [--progress] [--stats] SRC DST
// SRC/DST: an NBD URI or a file path; DST may be `null:`; `-` is standard output as DST, standard input as SRC.

import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { copy } from '@nbd/copy';

// A copy is a short, I/O-bound run whose per-request JavaScript is small: V8's optimizing
// compiler (TurboFan) cost more CPU than it saved (~0.1 s per run, measured with perf), CPU
// the servers need on a busy machine. Tier 2 is Maglev, which Node 20 leaves off, so this
// means baseline (Sparkplug) code. Set before any of the copy's code gets hot.
setFlagsFromString('--max-opt=2');

const USAGE = 'usage: client-copy [--threads=N] [--connections=N] [--requests=N] [--request-size=BYTES] [--progress] [--stats] SRC DST';

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      threads: { type: 'string' },
      connections: { type: 'string' },
      requests: { type: 'string' },
      'request-size': { type: 'string' },
      progress: { type: 'boolean' },
      stats: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void console.log(USAGE);
  const num = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new Error(`--${name}: expected a number, got '${v}'`);
    return Number(v);
  };
  const [src, dst, extra] = positionals;
  if (!src || !dst || extra !== undefined) throw new Error(USAGE);
  const t0 = performance.now();
  let shown = -1;
  const r = await copy(src, dst, {
    threads: num('threads', values.threads),
    connections: num('connections', values.connections),
    inFlight: num('requests', values.requests),
    requestSize: num('request-size', values['request-size']),
    onProgress: values.progress
      ? (p) => {
          const pct = Math.floor((100 * p.done) / p.total);
          if (pct === shown) return; // at most 101 updates
          shown = pct;
          process.stderr.write(`\r${pct}%`);
        }
      : undefined,
  });
  const s = (performance.now() - t0) / 1000;
  if (values.progress) process.stderr.write('\n');
  if (values.stats)
    console.error(`${r.bytes} bytes (${r.zeroBytes} zero) in ${s.toFixed(3)} s: ${(r.bytes / s / 2 ** 30).toFixed(3)} GiB/s`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(`client-copy: ${(e as Error).message.split('\n')[0]}`);
  process.exit(1);
});
