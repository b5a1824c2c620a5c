#!/usr/bin/env bash
# Inside the VM (see bench/kernel.sh). One fio job at a time per target device.
set -euo pipefail
RUNTIME=${BENCH_RUNTIME:-4}
SIZE_MIB=${BENCH_SIZE_MIB:-256}
W=/tmp/kbench; rm -rf $W; mkdir -p $W
OUT=$W/results.tsv

wait_dev() { for _ in $(seq 300); do [ "$(cat /sys/block/$1/size)" != 0 ] && return 0; sleep 0.05; done; echo "$1 never came up" >&2; return 1; }
wait_sock() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; return 1; }

jobs() { # target device
  local name=$1 dev=$2
  for job in "seqwrite write 1M 4" "seqread read 1M 4" "randwrite randwrite 4k 16" "randread randread 4k 16"; do
    set -- $job
    fio --name="$1" --filename="$dev" --rw="$2" --bs="$3" --iodepth="$4" --ioengine=libaio --direct=1 \
      --size="${SIZE_MIB}M" --time_based --runtime="$RUNTIME" --output-format=json > $W/$name-$1.json 2>/dev/null
    /usr/bin/python3 - "$name" "$1" $W/$name-$1.json >> $OUT <<'PY'
import json, sys
j = json.load(open(sys.argv[3]))['jobs'][0]
side = j['write'] if j['write']['io_bytes'] else j['read']
print(f"{sys.argv[1]}\t{sys.argv[2]}\t{side['bw'] / 1024:.1f}\t{side['iops']:.0f}")
PY
  done
}

# 1. ours: examples/loopback.js (MemoryDevice, netlink)
node examples/dist/loopback.js "$SIZE_MIB" > $W/lb.log 2>&1 &
LB=$!
for _ in $(seq 600); do grep -q '^/dev/nbd' $W/lb.log && break; sleep 0.05; done
DEV=$(grep -o '^/dev/nbd[0-9]*' $W/lb.log) || { cat $W/lb.log; exit 1; }
jobs ours "$DEV"
kill -INT $LB; wait $LB || true

# 2. qemu-nbd over a tmpfs file, nbd-client (netlink)
truncate -s ${SIZE_MIB}M $W/q.img
qemu-nbd -k $W/q.sock -f raw -x '' --cache=writeback -t $W/q.img & Q=$!
wait_sock $W/q.sock
nbd-client -unix $W/q.sock /dev/nbd6 -b 512 >/dev/null
wait_dev nbd6
jobs qemu-nbd /dev/nbd6
nbd-client -d /dev/nbd6 >/dev/null; kill $Q; wait $Q 2>/dev/null || true

# 3. nbdkit memory, nbd-client (netlink)
nbdkit -f -U $W/k.sock memory ${SIZE_MIB}M & K=$!
wait_sock $W/k.sock
nbd-client -unix $W/k.sock /dev/nbd7 -b 512 >/dev/null
wait_dev nbd7
jobs nbdkit /dev/nbd7
nbd-client -d /dev/nbd7 >/dev/null; kill $K; wait $K 2>/dev/null || true

/usr/bin/python3 - $OUT "$RUNTIME" "$SIZE_MIB" <<'PY' | tee bench/kernel-results.md
import sys, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines()]
r = collections.defaultdict(dict)
for name, job, mbs, iops in rows: r[job][name] = (float(mbs), float(iops))
print(f"# Kernel NBD throughput in the test VM (TCG, {sys.argv[2]} s per fio job, {sys.argv[3]} MiB, O_DIRECT, libaio)\n")
print("| job | ours MB/s | qemu-nbd MB/s | nbdkit MB/s | ours IOPS | qemu-nbd IOPS | nbdkit IOPS | ours/qemu-nbd | ours/nbdkit |")
print("|---|---|---|---|---|---|---|---|---|")
for job in ["seqwrite", "seqread", "randwrite", "randread"]:
    o, q, k = (r[job].get(n, (0, 0)) for n in ["ours", "qemu-nbd", "nbdkit"])
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    print(f"| {job} | {o[0]:.1f} | {q[0]:.1f} | {k[0]:.1f} | {o[1]:.0f} | {q[1]:.0f} | {k[1]:.0f} | {ratio(o[0], q[0])} | {ratio(o[0], k[0])} |")
print("\nours = @nbd/linux loopback of a MemoryDevice (examples/loopback.ts); the others attached with nbd-client.")
PY
