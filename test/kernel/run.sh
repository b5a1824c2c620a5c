#!/usr/bin/env bash
# Kernel tests: boots the VM once per kernel (run-in-vm.sh: Debian 12's 6.1 and
# bookworm-backports' 6.12, each with nbd.ko under qemu, the host's / over 9p) and
# runs every in-guest test in one node process. Builds nothing: `tsc -b` has
# already produced packages/*/dist. Exits non-zero if any test (or a VM) fails;
# prints "kernel 6.1: N passed, M failed" per kernel, then the sum as
# "kernel: N passed, M failed".
#   VM_KERNELS="6.1 6.12"      the kernels to boot (VM_KERNEL_SERIES of run-in-vm.sh)
#   KERNEL_TEST_FILTER=regex   only the tests whose name matches
#   VM_TIMEOUT, VM_CPUS, VM_MEM, VM_DEBUG   see run-in-vm.sh
#   NBD_NODE=/path/to/node   the node the guest runs (default: scripts/node-lines.sh's
#                            NODE_DEV); scripts/test.sh runs the oldest and newest line
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/node-lines.sh
NODE=${NBD_NODE:-$(node_bin "$NODE_DEV")}
if ! [ -x "$NODE" ]; then
  echo "kernel tests: no node at $NODE (scripts/bootstrap.sh fetches the supported lines)" >&2
  echo "kernel: 0 passed, 1 failed"
  exit 1
fi
# The guest inherits this PATH (run-in-vm.sh exports the environment): the chosen
# node first, then Debian's tools.
export PATH="$(dirname "$NODE"):/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
echo "kernel tests on node $(node --version)" >&2

missing=""
for t in mkfs.ext4 e2fsck debugfs blkdiscard blockdev mount dd nbdkit qemu-nbd qemu-system-x86_64; do
  command -v "$t" >/dev/null || missing="$missing $t"
done
if [ -n "$missing" ]; then
  echo "kernel tests: missing host tools:$missing (scripts/bootstrap.sh --peers --vm; e2fsprogs, util-linux)" >&2
  echo "kernel: 0 passed, 1 failed"
  exit 1
fi
for p in linux server client protocol devices; do
  [ -f "packages/$p/dist/index.js" ] || { echo "kernel tests: packages/$p/dist missing: run pnpm exec tsc -b" >&2; echo "kernel: 0 passed, 1 failed"; exit 1; }
done

passed=0 failed=0 rc=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for series in ${VM_KERNELS:-6.1 6.12}; do
  # The guest prints "kernel $KERNEL_LABEL: N passed, M failed (T s)" last.
  KERNEL_LABEL=$series VM_KERNEL_SERIES=$series VM_TIMEOUT=${VM_TIMEOUT:-900} \
    bash test/kernel/run-in-vm.sh "$NODE" test/kernel/kernel.test.mjs 2>&1 | tee "$log"
  one=${PIPESTATUS[0]}
  counts=$(sed -nE "s/^kernel $series: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p" "$log" | tail -n1)
  if [ -z "$counts" ]; then
    echo "kernel tests: the $series VM itself failed (rc $one; see the console tail above)" >&2
    echo "kernel $series: 0 passed, 1 failed"
    counts="0 1"
  fi
  read -r p f <<<"$counts"
  passed=$((passed + p)) failed=$((failed + f))
  [ "$one" = 0 ] || rc=1
done
echo "kernel: $passed passed, $failed failed"
exit "$rc"
