#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine with only Node 20
# and npm (as root): every supported Node line (scripts/node-lines.sh), pnpm, the
# workspace's npm packages, the Debian packages of the interop peers (and, with
# --vm, the kernel-test VM's), then builds everything with a supported node.
# Fails loudly if anything cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-lines.sh

PEERS="qemu-utils nbdkit libnbd-bin python3-libnbd nbd-server nbd-client fio"
VM_PKGS="qemu-system-x86 busybox-static"
want=""
for arg in "$@"; do
  case $arg in
    --peers) want="$want $PEERS" ;;
    --vm) want="$want $VM_PKGS" ;;
  esac
done

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bootstrap: apt-get install$missing" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

if ! command -v pnpm >/dev/null || [ "$(pnpm --version)" != "10.34.9" ]; then
  echo "bootstrap: npm install -g pnpm@10.34.9" >&2
  npm install -g pnpm@10.34.9 >/dev/null 2>&1
fi

for v in "${NODE_LINES[@]}"; do ensure_node "$v"; done
# pnpm went in with the machine's npm (its global prefix); from here on the machine's
# own node (maybe 20, end-of-life) runs nothing of ours.
export PATH="$(node_dir "$NODE_DEV")/bin:$PATH"

CI=${CI:-} pnpm install --frozen-lockfile --reporter=silent
pnpm exec tsc -b
