#!/usr/bin/env bash
# Every test: codec unit tests, server/client interop against real peers (nbdkit,
# qemu-nbd, qemu-io, qemu-img, libnbd's nbdinfo/nbdcopy/python, nbd-server,
# nbd-client), then the kernel tests inside a qemu VM. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --peers --vm
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
pnpm exec vitest run
if [ -f test/kernel/run.sh ]; then
  bash test/kernel/run.sh
fi
