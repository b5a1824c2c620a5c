#!/usr/bin/env bash
# Every test: codec unit tests, server/client interop against real peers (nbdkit,
# qemu-nbd, qemu-io, qemu-img, libnbd's nbdinfo/nbdcopy/python, nbd-server,
# nbd-client), then the kernel tests inside a qemu VM. Installs what it needs.
# Ends with one "N passed, M failed" line over both suites.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --peers --vm || { echo "bootstrap failed" >&2; exit 1; }
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

pnpm exec tsc -p tsconfig.test.json || { echo "type errors in tests" >&2; exit 1; }
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$out/vitest.json"
unit_rc=$?

kernel_rc=0
if [ -f test/kernel/run.sh ]; then
  bash test/kernel/run.sh 2>&1 | tee "$out/kernel.log"
  kernel_rc=${PIPESTATUS[0]}
fi

node -e '
const fs = require("fs");
let passed = 0, failed = 0;
try {
  const j = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  passed += j.numPassedTests; failed += j.numFailedTests + (j.numRuntimeErrorTestSuites ?? 0);
} catch { failed += 1; }
try {
  const log = fs.readFileSync(process.argv[2], "utf8");
  const m = [...log.matchAll(/^kernel: (\d+) passed, (\d+) failed/gm)].pop();
  if (m) { passed += +m[1]; failed += +m[2]; }
} catch {}
console.log(`${passed} passed, ${failed} failed`);
' "$out/vitest.json" "$out/kernel.log"

[ $unit_rc = 0 ] && [ $kernel_rc = 0 ]
