#!/usr/bin/env bash
# Coverage-guided fuzzing of @nbd with Jazzer.js: every target of fuzz/targets runs
# RUNS executions (default 1,000,000) from fuzz/seeds, one after another, and the
# figures go to stdout as a Markdown table (bench/FUZZ-RESULTS.md holds the last
# ones). Not part of CI; the test command runs `node fuzz/run.mjs --short` instead.
#   bench/fuzz.sh                       all targets, 1,000,000 executions each
#   RUNS=200000 bench/fuzz.sh server-transmission
# Needs g++ on systems whose glibc is older than 2.38 (fuzz/setup.mjs builds a shim).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1000000}
export PATH="/root/.cache/nbd-node/node-24.21.0/bin:$PATH"
[ -d packages/protocol/dist ] || npx tsc -b
node fuzz/setup.mjs
node --input-type=module - "$RUNS" "$@" <<'JS'
import { TARGETS, runTarget } from './fuzz/run.mjs';
const [runs, ...names] = process.argv.slice(2);
console.log(`node ${process.versions.node}, ${new Date().toISOString().slice(0, 10)}, ${runs} executions per target\n`);
console.log('| target | executions | time | exec/s | cov (edges) | ft (features) | corpus | peak RSS | result |');
console.log('|---|---|---|---|---|---|---|---|---|');
let failed = 0;
for (const name of names.length ? names : TARGETS) {
  const r = await runTarget(name, { runs: Number(runs), seconds: 0, rssMb: 2048, progress: true });
  const finding = r.ok ? 'no crash' : (/==\d+== (.*)/.exec(r.log)?.[1] ?? `exit ${r.code}`).slice(0, 120);
  console.log(`| ${name} | ${r.runs} | ${r.seconds.toFixed(0)} s | ${Math.round(r.runs / r.seconds)} | ${r.cov} | ${r.ft} | ${r.corpus} | ${r.rssMb} MiB | ${finding} |`);
  if (!r.ok) failed++;
}
process.exit(failed ? 1 : 0);
JS
