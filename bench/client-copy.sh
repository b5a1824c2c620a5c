#!/bin/bash
# @nbd/client vs libnbd, side by side in one run:
#   copy   nbdkit memory (filled) → null:      ours (@nbd/copy, examples/client-copy) vs nbdcopy
#   copy   nbdkit pattern → nbdkit memory       ours vs nbdcopy
#   randread 4 KiB, queue depth 32, one connection, nbdkit memory: ours vs fio (libnbd engine)
# Prints one markdown table with ratios (ours / theirs; > 1 = ours faster).
#   SIZE (default 1G), RUNS (default 3), SECS (randread seconds, default 10)
set -eu
cd "$(dirname "$0")/.."
# The node of the caller's PATH (Node >= 22: the SDK uses Promise.withResolvers), found before
# Debian's /usr/bin (Node 20 here) goes first for the peers.
NODE=${NODE:-$(command -v node)}
"$NODE" -e 'if (+process.versions.node.split(".")[0] < 22) { console.error(`client-bench: Node ${process.version} is too old; put Node >= 22 first in PATH or set NODE`); process.exit(1); }'
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
# This machine sets NODE_EXTRA_CA_CERTS for its HTTPS proxy; node then parses the whole CA
# bundle at every start (~30 ms of a ~0.8 s copy, measured with perf), which has nothing to
# do with NBD. A plain machine has no such variable, so the runs here go without it.
unset NODE_EXTRA_CA_CERTS
SIZE=${SIZE:-1G}; RUNS=${RUNS:-3}; SECS=${SECS:-10}
WORK=$(mktemp -d /tmp/nbd-client-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "[client-bench $(date +%T)] $*" >&2; }

pnpm exec tsc -b >&2
BYTES=$(nbdkit -U - null "$SIZE" --run 'nbdinfo --size "$uri"')

serve() { # name plugin args...  (in this shell, not a subshell, so the PID is ours to kill)
  local name=$1; shift
  nbdkit -f -U "$WORK/$name.sock" "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!)
}
ready() { for _ in $(seq 200); do nbdinfo --size "$1" >/dev/null 2>&1 && return; sleep 0.05; done; log "server $1 did not start"; exit 1; }
serve mem memory "$SIZE"; MEM="nbd+unix:///?socket=$WORK/mem.sock"
serve dst memory "$SIZE"; DST="nbd+unix:///?socket=$WORK/dst.sock"
serve pat pattern "$SIZE"; PAT="nbd+unix:///?socket=$WORK/pat.sock"
ready "$MEM"; ready "$DST"; ready "$PAT"
log "filling $MEM with data"
nbdcopy "$PAT" "$MEM"

# wall time (s) of one command
once() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null || { log "FAILED: $*"; kill $$; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# ours and theirs alternate (A B A B ...) so drift on the shared CPU hits both; prints "ours theirs"
# and ours again with --threads=2 (this thread plus one worker, 2 connections each); prints "ours ours-t2 theirs"
pair() { # src dst
  local os=() o2=() ts=()
  for _ in $(seq "$RUNS"); do
    os+=("$(once "$NODE" examples/dist/client-copy.js "$1" "$2")")
    o2+=("$(once "$NODE" examples/dist/client-copy.js --threads=2 "$1" "$2")")
    ts+=("$(once nbdcopy "$1" "$2")")
  done
  echo "$(median "${os[@]}") $(median "${o2[@]}") $(median "${ts[@]}")"
}
gibs() { echo "scale=3; $BYTES / $1 / 1073741824" | bc -l; }

log "copy memory → null:"
read -r o1 p1 t1 < <(pair "$MEM" null:)
log "copy pattern → memory (destination pre-allocated by one untimed nbdcopy)"
nbdcopy "$PAT" "$DST"
read -r o2 p2 t2 < <(pair "$PAT" "$DST")
log "randread 4k qd32 (${SECS}s each)"
o3=$("$NODE" examples/dist/client-randread.js "$MEM" "$SECS" 32 4096)
t3=$(fio --name=rr --ioengine=nbd --uri="$MEM" --rw=randread --bs=4k --iodepth=32 --size="$BYTES" \
  --time_based --runtime="$SECS" --ramp_time=1 --norandommap --randrepeat=0 --output-format=json --output="$WORK/fio.json" >/dev/null && \
  /usr/bin/python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$WORK/fio.json")

r() { echo "scale=2; $1 / $2" | bc -l; }
echo "| workload ($SIZE export, median of $RUNS) | @nbd/client | libnbd | ratio ours/libnbd |"
echo "|---|---|---|---|"
echo "| copy nbdkit memory → null: (GiB/s) | $(gibs "$o1") | $(gibs "$t1") (nbdcopy) | $(r "$t1" "$o1") |"
echo "| same, ours with --threads=2 | $(gibs "$p1") | $(gibs "$t1") (nbdcopy) | $(r "$t1" "$p1") |"
echo "| copy nbdkit pattern → nbdkit memory (GiB/s) | $(gibs "$o2") | $(gibs "$t2") (nbdcopy) | $(r "$t2" "$o2") |"
echo "| same, ours with --threads=2 | $(gibs "$p2") | $(gibs "$t2") (nbdcopy) | $(r "$t2" "$p2") |"
echo "| randread 4 KiB qd32, 1 conn (IOPS) | $o3 | $t3 (fio nbd engine) | $(r "$o3" "$t3") |"
