// Runs the Jazzer.js fuzz targets of fuzz/targets. Each run starts from fuzz/seeds/<target>
// and the crash fixtures in fuzz/crashes/<target> (replayed first: a fixed bug stays
// fixed), keeps the corpus it grows in a temporary directory, and stops at -runs (or
// the time given). Prints one line per target with executions, coverage (libFuzzer's
// "cov": instrumented edges hit; "ft": features), corpus size and peak RSS; a crash or
// timeout is written to fuzz/crashes/<target>/ and fails the run.
//   node fuzz/run.mjs --short                 each target for a few seconds (the test command's guard)
//   node fuzz/run.mjs --runs=1000000 [names]  the bench (bench/fuzz.sh)
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setup } from './setup.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
export const TARGETS = [
  'protocol-client-stream',
  'protocol-server-stream',
  'server-negotiation',
  'server-transmission',
  'client-reply-assembly',
];
/** Targets whose fuzz function is async (the engine's handlers return promises). */
const ASYNC = new Set(['server-negotiation', 'server-transmission']);
/**
 * Largest input per target. The stream decoders decode every input twice, frame by frame:
 * 16 KiB of tiny frames slows them tenfold without reaching code 4 KiB does not.
 */
const MAX_LEN = { 'protocol-client-stream': 4096, 'protocol-server-stream': 4096 };

function parseArgs(argv) {
  const o = { short: false, runs: 0, seconds: 0, rssMb: 2048, names: [] };
  for (const a of argv) {
    if (a === '--short') o.short = true;
    else if (a.startsWith('--runs=')) o.runs = Number(a.slice(7));
    else if (a.startsWith('--seconds=')) o.seconds = Number(a.slice(10));
    else if (a.startsWith('--rss-mb=')) o.rssMb = Number(a.slice(9));
    else if (TARGETS.includes(a)) o.names.push(a);
    else throw new Error(`unknown argument ${a} (targets: ${TARGETS.join(', ')})`);
  }
  if (o.short && o.seconds === 0) o.seconds = 6;
  if (!o.short && o.runs === 0 && o.seconds === 0) o.runs = 1_000_000;
  return o;
}

/** Runs one target; resolves with its figures. */
export function runTarget(name, o) {
  const corpus = mkdtempSync(join(tmpdir(), `nbd-fuzz-${name}-`));
  const seeds = join(here, 'seeds', name);
  if (existsSync(seeds)) cpSync(seeds, corpus, { recursive: true });
  const crashes = join(here, 'crashes', name);
  mkdirSync(crashes, { recursive: true });
  const lf = [
    `-max_len=${MAX_LEN[name] ?? 16384}`,
    `-rss_limit_mb=${o.rssMb}`,
    `-timeout=10`,
    `-dict=${join(here, 'dict.txt')}`,
    `-artifact_prefix=${crashes}/`,
    '-print_final_stats=1',
  ];
  if (o.runs) lf.push(`-runs=${o.runs}`);
  if (o.seconds) lf.push(`-max_total_time=${o.seconds}`);
  // The guard in the test command walks the same inputs on every run (a prefix of one
  // sequence, however fast the machine): a finding there is a regression, not luck.
  // Exploring is the bench's job (bench/fuzz.sh), with libFuzzer's random seed.
  if (o.short) lf.push('-seed=1');
  const args = [
    '-r',
    join(here, 'compat', 'preload.cjs'),
    join(here, 'node_modules', '@jazzer.js', 'core', 'dist', 'cli.js'),
    join(here, 'targets', `${name}.mjs`),
    corpus,
    ...(readdirSync(crashes).length > 0 ? [crashes] : []),
    '-i',
    `${join(root, 'packages')}/`,
    '-e',
    'node_modules',
    '--disableBugDetectors=.*',
    ...(ASYNC.has(name) ? [] : ['--sync']),
    '--',
    ...lf,
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const take = (d) => {
      log += d;
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
      // Long runs say how they go (libFuzzer's pulse lines: executions, coverage, exec/s, RSS).
      if (o.progress) for (const line of String(d).split('\n')) if (/^#\d+\s+pulse/.test(line)) process.stderr.write(`${name}: ${line}\n`);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('exit', (code) => {
      const corpusFiles = readdirSync(corpus).length;
      rmSync(corpus, { recursive: true, force: true });
      const last = [...log.matchAll(/^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)\/(\S+).*?rss: (\d+)Mb/gm)].pop();
      const runs = /stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1] ?? last?.[1];
      const peak = /stat::peak_rss_mb:\s*(\d+)/.exec(log)?.[1] ?? last?.[6];
      resolve({
        name,
        ok: code === 0,
        code,
        runs: Number(runs ?? 0),
        cov: Number(last?.[2] ?? 0),
        ft: Number(last?.[3] ?? 0),
        corpus: corpusFiles,
        rssMb: Number(peak ?? 0),
        seconds: (Date.now() - started) / 1000,
        log,
      });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const o = parseArgs(process.argv.slice(2));
  setup({ quiet: true });
  let failed = 0;
  const names = o.names.length ? o.names : TARGETS;
  for (const name of names) {
    const r = await runTarget(name, o);
    console.log(
      `${r.ok ? 'ok  ' : 'FAIL'} ${name}: ${r.runs} executions in ${r.seconds.toFixed(0)} s, cov ${r.cov} ft ${r.ft}, corpus ${r.corpus}, peak RSS ${r.rssMb} MiB`,
    );
    if (!r.ok) {
      failed++;
      console.log(r.log.split('\n').slice(-60).join('\n'));
    }
  }
  console.log(`fuzz: ${names.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
