// Our nbdcopy: `node examples/dist/client-copy.js [--threads=N] [--connections=N] [--requests=N] [--request-size=BYTES] [--progress] SRC DST`
// SRC/DST: an NBD URI or a file path; DST may be `null:`; `-` is standard output as DST, standard input as SRC.
import { setFlagsFromString } from 'node:v8';
import { copy } from '@nbd/copy';

// A copy is a short, I/O-bound run whose per-request JavaScript is small: V8's optimizing
// compiler (TurboFan) cost more CPU than it saved (~0.1 s per run, measured with perf), CPU
// the servers need on a busy machine. Tier 2 is Maglev, which Node 20 leaves off, so this
// means baseline (Sparkplug) code. Set before any of the copy's code gets hot.
setFlagsFromString('--max-opt=2');

async function main(argv: string[]): Promise<void> {
  const opt = (name: string) => {
    const a = argv.find((x) => x.startsWith(`--${name}=`));
    return a === undefined ? undefined : Number(a.slice(name.length + 3));
  };
  const [src, dst] = argv.filter((a) => !a.startsWith('--'));
  if (!src || !dst) throw new Error('usage: client-copy [--threads=N] [--connections=N] [--requests=N] [--request-size=BYTES] [--progress] SRC DST');
  const t0 = performance.now();
  const r = await copy(src, dst, {
    threads: opt('threads'),
    connections: opt('connections'),
    inFlight: opt('requests'),
    requestSize: opt('request-size'),
    onProgress: argv.includes('--progress') ? (p) => process.stderr.write(`\r${((100 * p.done) / p.total).toFixed(1)}%`) : undefined,
  });
  const s = (performance.now() - t0) / 1000;
  if (argv.includes('--progress')) process.stderr.write('\n');
  if (argv.includes('--stats')) console.error(`${r.bytes} bytes (${r.zeroBytes} zero) in ${s.toFixed(3)} s: ${(r.bytes / s / 2 ** 30).toFixed(3)} GiB/s`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(`client-copy: ${(e as Error).message}`);
  process.exit(1);
});
