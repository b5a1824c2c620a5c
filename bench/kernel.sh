#!/usr/bin/env bash
# Kernel block-device throughput: our loopback (MemoryDevice served by this
# project, attached through @nbd/linux) versus qemu-nbd (raw file on tmpfs) and
# nbdkit memory, both attached with nbd-client. All inside the test VM (TCG:
# absolute numbers mean little, the ratios are the point). Host side boots the
# VM; inside it runs bench/kernel-guest.sh. Results: stdout and bench/kernel-results.md.
#   BENCH_RUNTIME=seconds per fio job (default 4)   BENCH_SIZE_MIB (default 256)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f examples/dist/loopback.js ] || { echo "run pnpm exec tsc -b first" >&2; exit 1; }
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
for t in fio nbd-client qemu-nbd nbdkit; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
VM_TIMEOUT=${VM_TIMEOUT:-900} bash test/kernel/run-in-vm.sh bash bench/kernel-guest.sh
