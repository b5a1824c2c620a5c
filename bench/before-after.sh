#!/bin/bash
# Speed before and after a change, side by side in one run on one machine state:
# builds BEFORE (a git revision; default: the last commit that landed before this
# wave, 85b0f43) in a temporary worktree next to this checkout's own build, then
#   1. bench/compare.sh: nbdkit-memory, qemu-nbd, and our server from both builds
#      (one thread, and two worker threads), every ratio against nbdkit-memory;
#   2. bench/client-copy.sh: our copy() and random reads from both builds against
#      nbdcopy and fio's libnbd engine.
# Both builds run on the same node ($NODE; default the newest supported one cached by
# the bootstrap). Installs what the benches need (hyperfine, fio, peers) first.
#   SIZE, ROUNDS, RUNS, FIO_RUNTIME, SECS, WORKLOADS: as compare.sh / run.sh / client-copy.sh
#   (defaults here: SIZE=4G ROUNDS=2 RUNS=3 FIO_RUNTIME=5 for the server, SIZE=4G RUNS=5 for copy)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BEFORE=${1:-85b0f43}
cd "$REPO"
bash scripts/bootstrap.sh --all-lines --peers >&2
. "$HERE/needs.sh"
NODE=${NODE:-$(ls -d "${HOME:-/root}"/.cache/nbd-node/node-*/bin/node 2>/dev/null | sort -V | tail -1)}
[ -x "$NODE" ] || { echo "before-after: no supported node cached (run the bootstrap)" >&2; exit 1; }
export NODE

OLD=$(mktemp -d /tmp/nbd-before.XXXXXX)
trap 'git -C "$REPO" worktree remove --force "$OLD" >/dev/null 2>&1 || rm -rf "$OLD"' EXIT
echo "before-after: building $BEFORE in $OLD" >&2
git -C "$REPO" worktree add --detach "$OLD" "$BEFORE" >/dev/null 2>&1
(cd "$OLD" && PATH="$(dirname "$NODE"):$PATH" pnpm install --frozen-lockfile --reporter=silent >&2 && PATH="$(dirname "$NODE"):$PATH" pnpm exec tsc -b >&2)
(cd "$REPO" && PATH="$(dirname "$NODE"):$PATH" pnpm exec tsc -b >&2)
rev_after="$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo +changes)"
rev_before=$(git -C "$OLD" rev-parse --short HEAD)

echo "## Server: $rev_before (before) and $rev_after (after), $("$NODE" --version)"
SIZE=${SIZE:-4G} ROUNDS=${ROUNDS:-2} RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5} bash "$HERE/compare.sh" \
  nbdkit-memory qemu-nbd \
  "ours-before=$NODE $OLD/examples/dist/serve-memory.js --socket {SOCK} --size {SIZE}" \
  "ours-after=$NODE $REPO/examples/dist/serve-memory.js --socket {SOCK} --size {SIZE}" \
  "ours-t2-before=$NODE $OLD/examples/dist/serve-memory.js --socket {SOCK} --size {SIZE} --threads 2" \
  "ours-t2-after=$NODE $REPO/examples/dist/serve-memory.js --socket {SOCK} --size {SIZE} --threads 2"
echo
echo "## Client: $rev_before (before) and $rev_after (after)"
SIZE=${CLIENT_SIZE:-4G} RUNS=${CLIENT_RUNS:-5} BUILDS="before=$OLD after=$REPO" bash "$HERE/client-copy.sh"
