#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine with only Node 20
# and npm (as root): every supported Node line (scripts/node-lines.sh), pnpm, the
# workspace's npm packages, the Debian packages of the interop peers (and, with
# --vm, the kernel-test VM's), then builds everything with a supported node.
# --peers also fetches qemu 10.0 from bookworm-backports beside Debian's 7.2, and --vm
# the backports 6.12 kernel beside 6.1: unpacked into caches, never installed.
# Fails loudly if anything cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-lines.sh

PEERS="qemu-utils nbdkit libnbd-bin python3-libnbd nbd-server nbd-client fio gnutls-bin strace g++ file"
VM_PKGS="qemu-system-x86 busybox-static"
want=""
backports=""
for arg in "$@"; do
  case $arg in
    --peers) want="$want $PEERS"; backports="$backports qemu" ;;
    --vm) want="$want $VM_PKGS"; backports="$backports kernel" ;;
  esac
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bootstrap: apt-get install$missing" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# --- bookworm-backports: qemu 10.0 and the 6.12 kernel, unpacked into caches ---
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}
QEMU10_DIR=${NBD_QEMU10_DIR:-$CACHE_ROOT/nbd-qemu-10}
VM_CACHE=${VM_CACHE:-$CACHE_ROOT/nbd-test-vm}
BACKPORTS_LIST=/etc/apt/sources.list.d/nbd-bookworm-backports.list

# Adds the suite to apt's sources (a file of its own; its default priority 100 never
# upgrades an installed package) and refreshes the lists when apt does not know it yet.
ensure_backports() {
  if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "bootstrap: adding bookworm-backports to apt's sources ($BACKPORTS_LIST)" >&2
    echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee "$BACKPORTS_LIST" >/dev/null
  fi
  # (grep reads all of its input: with pipefail, grep -q's early exit would fail the pipe)
  if ! apt-cache madison qemu-utils 2>/dev/null | grep bookworm-backports >/dev/null; then
    $SUDO apt-get update -q >/dev/null
  fi
  apt-cache madison qemu-utils 2>/dev/null | grep bookworm-backports >/dev/null ||
    { echo "bootstrap: apt does not know bookworm-backports after apt-get update" >&2; exit 1; }
}

# apt-get download -t bookworm-backports PKG, unpacked with dpkg-deb -x into DEST.
fetch_backport() {
  local pkg=$1 dest=$2 tmp
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # _apt downloads into it
  echo "bootstrap: fetching $pkg (bookworm-backports) into $dest" >&2
  if ! (cd "$tmp" && apt-get download -q -t bookworm-backports "$pkg" >/dev/null 2>"$tmp/err"); then
    cat "$tmp/err" >&2; rm -rf "$tmp"
    echo "bootstrap: apt-get download -t bookworm-backports $pkg failed" >&2; exit 1
  fi
  rm -rf "$dest.tmp"
  dpkg-deb -x "$tmp"/*.deb "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$tmp"
}

for b in $backports; do
  case $b in
    qemu)
      if ! "$QEMU10_DIR/usr/bin/qemu-nbd" --version 2>/dev/null | grep -E '^[^ ]*qemu-nbd 10\.' >/dev/null; then
        ensure_backports
        fetch_backport qemu-utils "$QEMU10_DIR" # qemu-img, qemu-io, qemu-nbd and qemu-storage-daemon
        "$QEMU10_DIR/usr/bin/qemu-nbd" --version | grep -E '^[^ ]*qemu-nbd 10\.' >/dev/null ||
          { echo "bootstrap: $QEMU10_DIR/usr/bin/qemu-nbd is not qemu 10" >&2; exit 1; }
      fi ;;
    kernel)
      if ! ls "$VM_CACHE"/linux-image-6.12*/boot/vmlinuz-* >/dev/null 2>&1; then
        ensure_backports
        pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
              awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.12/ && !n++ { print $2 }')
        [ -n "$pkg" ] || { echo "bootstrap: no 6.12 linux-image-amd64 in bookworm-backports" >&2; exit 1; }
        mkdir -p "$VM_CACHE"
        fetch_backport "$pkg" "$VM_CACHE/$pkg"
      fi ;;
  esac
done

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
