#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine with only Node and npm
# (as root), then builds everything. What it installs depends on the job:
#   (no flag)     one supported Node (the machine's own when it is one, else NODE_DEV
#                 from the npm registry), pnpm, the workspace's npm packages, the build
#   --demo        that, and libnbd's nbdinfo (the one peer `npm run demo` runs)
#   --all-lines   every supported Node line (scripts/node-lines.sh), for the tests
#   --peers       the interop peers from Debian, and qemu 10.0 from bookworm-backports
#                 unpacked beside Debian's 7.2 (never installed)
#   --vm          the kernel-test VM's packages, and the backports 6.12 kernel unpacked
#                 beside Debian's 6.1
# Every step says what it does; every directory it writes into, it creates. Fails
# loudly if anything cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-lines.sh

PEERS="qemu-utils nbdkit libnbd-bin python3-libnbd nbd-server nbd-client fio gnutls-bin strace g++ file ceph-mon ceph-osd radosgw qemu-block-extra nbdkit-plugin-python nginx s3cmd"
VM_PKGS="qemu-system-x86 busybox-static"
want="" backports="" all_lines=""
for arg in "$@"; do
  case $arg in
    --demo) want="$want libnbd-bin" ;;
    --peers) want="$want $PEERS"; backports="$backports qemu" ;;
    --vm) want="$want $VM_PKGS"; backports="$backports kernel" ;;
    --all-lines) all_lines=1 ;;
    *) echo "bootstrap: unknown option $arg (--demo, --all-lines, --peers, --vm)" >&2; exit 2 ;;
  esac
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
say() { echo "bootstrap: $*" >&2; }

# --- Debian packages ---
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "apt-get install$missing"
  $SUDO apt-get update -q >/dev/null
  # apt's own "Need to get N MB of archives" line is the download size.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing |
    sed -nE 's/^(Need to get .*)/bootstrap:   \1/p' >&2
fi

# --- bookworm-backports: qemu 10.0 and the 6.12 kernel, unpacked into caches ---
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}
QEMU10_DIR=${NBD_QEMU10_DIR:-$CACHE_ROOT/nbd-qemu-10}
VM_CACHE=${VM_CACHE:-$CACHE_ROOT/nbd-test-vm}
source scripts/apt-suite.sh

# apt-get download -t bookworm-backports PKG, unpacked with dpkg-deb -x into DEST. The
# .deb is kept in apt's own archive cache, so a second machine state (or a new cache
# directory) unpacks it again without downloading it twice.
fetch_backport() {
  local pkg=$1 dest=$2 tmp name archive=/var/cache/apt/archives
  mkdir -p "$(dirname "$dest")"
  name=$(apt-get download --print-uris -t bookworm-backports "$pkg" 2>/dev/null | awk 'NR == 1 { print $2 }')
  [ -n "$name" ] || { say "apt-get download --print-uris -t bookworm-backports $pkg found nothing"; exit 1; }
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # _apt downloads into it
  if [ -f "$archive/$name" ]; then
    say "unpacking $pkg (bookworm-backports, already in $archive) into $dest"
    cp "$archive/$name" "$tmp/"
  else
    say "fetching $pkg (bookworm-backports) into $dest"
    if ! (cd "$tmp" && apt-get download -q -t bookworm-backports "$pkg" >/dev/null 2>"$tmp/err"); then
      cat "$tmp/err" >&2; rm -rf "$tmp"
      say "apt-get download -t bookworm-backports $pkg failed"; exit 1
    fi
    say "  $(du -m "$tmp"/*.deb | cut -f1) MB downloaded"
    $SUDO cp "$tmp"/*.deb "$archive/" 2>/dev/null || true
  fi
  rm -rf "$dest.tmp"
  dpkg-deb -x "$tmp"/*.deb "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$tmp"
}

for b in $backports; do
  case $b in
    qemu)
      if ! "$QEMU10_DIR/usr/bin/qemu-nbd" --version 2>/dev/null | grep -E '^[^ ]*qemu-nbd 10\.' >/dev/null; then
        ensure_suite bookworm-backports qemu-utils
        fetch_backport qemu-utils "$QEMU10_DIR" # qemu-img, qemu-io, qemu-nbd and qemu-storage-daemon
        "$QEMU10_DIR/usr/bin/qemu-nbd" --version | grep -E '^[^ ]*qemu-nbd 10\.' >/dev/null ||
          { say "$QEMU10_DIR/usr/bin/qemu-nbd is not qemu 10"; exit 1; }
      fi ;;
    kernel)
      if ! ls "$VM_CACHE"/linux-image-6.12*/boot/vmlinuz-* >/dev/null 2>&1; then
        ensure_suite bookworm-backports linux-image-amd64
        pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
              awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.12/ && !n++ { print $2 }')
        [ -n "$pkg" ] || { say "no 6.12 linux-image-amd64 in bookworm-backports"; exit 1; }
        fetch_backport "$pkg" "$VM_CACHE/$pkg"
      fi ;;
  esac
done

# --- Node, pnpm, the workspace ---
if [ -n "$all_lines" ]; then
  for v in "${NODE_LINES[@]}"; do ensure_node "$v"; done
  node_path=$(node_dir "$NODE_DEV")/bin
else
  node_path=$(ensure_one_node)
fi
# From here on the machine's own node (maybe 20, end-of-life) runs nothing of ours.
export PATH="$node_path:$PATH"

PNPM_VERSION=$(node -p "require('./package.json').packageManager.replace(/^pnpm@/, '')")
# npm's global bin directory is where `npm install -g` puts pnpm; it goes on PATH first.
export PATH="$node_path:$(npm prefix -g)/bin:$PATH"
if [ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]; then
  say "npm install -g pnpm@$PNPM_VERSION (about 5 MB)"
  npm install -g --no-fund --no-audit "pnpm@$PNPM_VERSION" >/dev/null
  [ "$(pnpm --version 2>/dev/null)" = "$PNPM_VERSION" ] || { say "pnpm $PNPM_VERSION is not on PATH after npm install -g"; exit 1; }
fi

say "pnpm install (the workspace's npm packages: TypeScript, Vitest, Biome, koffi, …)"
CI=${CI:-} pnpm install --frozen-lockfile --reporter=silent
say "building (tsc -b with node $(node --version))"
pnpm exec tsc -b
