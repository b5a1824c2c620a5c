#!/usr/bin/env bash
# Every test, whatever node the machine has: bootstrap (the Node lines, pnpm, the
# peers, a build with NODE_DEV), the newcomer's first minute from an empty home
# (test/fresh: npm install's message, the demo, npm run nbd, the bootstrap), type-check the tests, lint and format checks, the
# vitest suites (units, interop against nbdkit, qemu-nbd, qemu-io, qemu-img, libnbd's
# nbdinfo/nbdcopy/python, nbd-server, nbd-client, README snippets) under every
# supported Node line, a short run of every fuzz target, the packaging checks (publint, attw, ESM and CommonJS
# consumers on every line), then the kernel tests in a qemu VM: the oldest line on
# Linux 6.1, the newest on 6.12 (NBD_KERNEL_MATRIX=full: both lines on both kernels).
# Ends with one "N passed, M failed" line over all of it, after one line per step
# that names its failures ("node 26: 2 failed: <file> > <test>").
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/bootstrap.sh --all-lines --peers --vm || { echo "bootstrap failed" >&2; echo "0 passed, 1 failed"; exit 1; }
source scripts/node-lines.sh
base_path="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
export PATH="$(node_dir "$NODE_DEV")/bin:$base_path"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
since=$started
result() { # result KIND LABEL EXIT_CODE [INPUT]: one result file, in run order, with its time
  n=$((n + 1))
  node scripts/results.mjs "$1" "$out/$(printf %02d $n).result" "${@:2}"
  echo "seconds $(($(date +%s) - since))" >> "$out/$(printf %02d $n).result"
  since=$(date +%s)
}

result check bootstrap 0
echo "=== the first minute, from an empty home (test/fresh/run.sh)" >&2
bash test/fresh/run.sh --results "$out/fresh.json"
result list 'fresh machine' $? "$out/fresh.json"
echo "=== type-check, lint, format" >&2
pnpm exec tsc -p tsconfig.test.json
result check 'type-check of the tests' $?
pnpm run --silent lint
result check 'lint (biome check: lint and import order)' $?
pnpm run --silent format:check
result check 'format (biome format)' $?

for v in "${NODE_LINES[@]}"; do
  echo "=== vitest on $(node_name "$v") ($v)" >&2
  PATH="$(node_dir "$v")/bin:$base_path" node node_modules/vitest/vitest.mjs run \
    --reporter=default --reporter=json --outputFile.json="$out/vitest-$v.json"
  rc=$? # before "$(node_name)" below: a command substitution resets $?
  result vitest "$(node_name "$v")" $rc "$out/vitest-$v.json"
done

echo "=== fuzz regression guard (each target for seconds, crash fixtures replayed first)" >&2
node fuzz/run.mjs --short 2>&1 | tee "$out/fuzz.log"
result fuzz 'fuzz (short)' "${PIPESTATUS[0]}" "$out/fuzz.log"

echo "=== packaging" >&2
bash test/packaging/run.sh --results "$out/packaging.json"
result list packaging $? "$out/packaging.json"

# The oldest Node line on the oldest kernel, the newest on the newest: both lines and
# both kernels in ~8 minutes of TCG. NBD_KERNEL_MATRIX=full runs each line on both.
kernels_of() { # kernels_of NODE_VERSION
  if [ "${NBD_KERNEL_MATRIX:-}" = full ]; then echo "6.1 6.12"
  elif [ "$1" = "$NODE_OLDEST" ]; then echo 6.1
  else echo 6.12; fi
}
for v in "$NODE_OLDEST" "$NODE_NEWEST"; do
  echo "=== kernel tests on $(node_name "$v") ($v): $(kernels_of "$v")" >&2
  VM_KERNELS=$(kernels_of "$v") NBD_NODE=$(node_bin "$v") bash test/kernel/run.sh 2>&1 | tee "$out/kernel-$v.log"
  rc=${PIPESTATUS[0]}
  result kernel "kernel on $(node_name "$v")" "$rc" "$out/kernel-$v.log"
done

node scripts/results.mjs summary "$out" "$(($(date +%s) - started))"
