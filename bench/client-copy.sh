#!/bin/bash
# @nbd/client vs libnbd, side by side in one run:
#   copy   nbdkit memory (filled) → null:      ours (@nbd/copy, examples/client-copy) vs nbdcopy
#   copy   nbdkit pattern → nbdkit memory       ours vs nbdcopy
#   randread 4 KiB, queue depth 32, one connection, nbdkit memory: ours vs fio (libnbd engine)
# Prints one markdown table with ratios (ours / theirs; > 1 = ours faster).
#   SIZE (default 1G), RUNS (default 3), SECS (randread seconds, default 10)
#   BUILDS  our builds to compare, "label=checkout ..." (default "ours=." ; bench/before-after.sh
#           passes the old commit's build too); each runs its own examples/dist scripts
#   T2=1    also ours with --threads=2 (this thread plus one worker)
#   NODE    the node that runs ours (default: the newest supported node the bootstrap cached)
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/needs.sh"
cd "$(dirname "$0")/.."
# Our side runs on a supported node (>= 22: the SDK uses Promise.withResolvers): $NODE, else the
# newest the bootstrap cached, else the caller's; found before Debian's /usr/bin (Node 20 here)
# goes first for the peers.
NODE=${NODE:-$(ls -d "${HOME:-/root}"/.cache/nbd-node/node-*/bin/node 2>/dev/null | sort -V | tail -1)}
NODE=${NODE:-$(command -v node)}
"$NODE" -e 'if (+process.versions.node.split(".")[0] < 22) { console.error(`client-bench: Node ${process.version} is too old; set NODE to Node >= 22`); process.exit(1); }'
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
read -r -a BUILDS <<<"${BUILDS:-ours=.}"
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
# every build and nbdcopy alternate (A B C A B C ...) so drift on the shared CPU hits all;
# prints one median per build (and per build with --threads=2 if T2=1), then nbdcopy's
pair() { # src dst
  local -A t=()
  local variants=("")
  [ "${T2:-0}" = 1 ] && variants+=("--threads=2")
  for _ in $(seq "$RUNS"); do
    for b in "${BUILDS[@]}"; do
      for v in "${variants[@]}"; do
        # shellcheck disable=SC2086
        t["$b$v"]+=" $(once "$NODE" "${b#*=}/examples/dist/client-copy.js" $v "$1" "$2")"
      done
    done
    t[nbdcopy]+=" $(once nbdcopy "$1" "$2")"
  done
  local out=""
  for b in "${BUILDS[@]}"; do for v in "${variants[@]}"; do out+="$(median ${t["$b$v"]}) "; done; done
  echo "$out$(median ${t[nbdcopy]})"
}
gibs() { echo "scale=3; $BYTES / $1 / 1073741824" | bc -l; }
r() { echo "scale=2; $1 / $2" | bc -l; }
names=()
for b in "${BUILDS[@]}"; do names+=("${b%%=*}"); [ "${T2:-0}" = 1 ] && names+=("${b%%=*} --threads=2"); done

rows() { # title times... (the last is nbdcopy's)
  local title=$1; shift
  local all=("$@") theirs=${*: -1} i=0
  for n in "${names[@]}"; do
    echo "| $title, $n (GiB/s) | $(gibs "${all[$i]}") | $(gibs "$theirs") (nbdcopy) | $(r "$theirs" "${all[$i]}") |"
    i=$((i+1))
  done
}

log "copy memory → null:"
read -r -a c1 < <(pair "$MEM" null:)
log "copy pattern → memory (destination pre-allocated by one untimed nbdcopy)"
nbdcopy "$PAT" "$DST"
read -r -a c2 < <(pair "$PAT" "$DST")
log "randread 4k qd32 (${SECS}s each)"
rr=()
for b in "${BUILDS[@]}"; do rr+=("$("$NODE" "${b#*=}/examples/dist/client-randread.js" "$MEM" "$SECS" 32 4096)"); done
t3=$(fio --name=rr --ioengine=nbd --uri="$MEM" --rw=randread --bs=4k --iodepth=32 --size="$BYTES" \
  --time_based --runtime="$SECS" --ramp_time=1 --norandommap --randrepeat=0 --output-format=json --output="$WORK/fio.json" >/dev/null && \
  /usr/bin/python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$WORK/fio.json")

echo "| workload ($SIZE export, median of $RUNS, $("$NODE" --version)) | @nbd/client | libnbd | ratio ours/libnbd |"
echo "|---|---|---|---|"
rows "copy nbdkit memory → null:" "${c1[@]}"
rows "copy nbdkit pattern → nbdkit memory" "${c2[@]}"
i=0
for b in "${BUILDS[@]}"; do
  echo "| randread 4 KiB qd32, 1 conn, ${b%%=*} (IOPS) | ${rr[$i]} | $t3 (fio nbd engine) | $(r "${rr[$i]}" "$t3") |"
  i=$((i+1))
done
