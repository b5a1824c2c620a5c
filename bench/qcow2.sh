#!/bin/bash
# qcow2: our QcowDevice against qemu-nbd 10.0 (-f qcow2, its defaults: writeback cache,
# thread-pool AIO) on the same kind of image in the same directory, with bench/run.sh's
# workloads: nbdcopy sequential write and read, fio 4 KiB random read and write at QD32.
# Three passes, each on a new image per server: a fresh image written sequentially
# (every write allocates), a fresh image written at random, and a fully allocated one
# (preallocation=falloc) for reads and in-place writes.
#
#   bench/qcow2.sh              (build first: pnpm exec tsc -b)
#
# Environment: SIZE (default 1G), RUNS (default 3), FIO_RUNTIME (default 5 s), OUT
# (results root, default a new /tmp dir), QEMU10 (qemu 10's bin directory). Images
# live in compare.sh's per-server directory under /tmp. Ratios are ours / qemu-nbd.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/needs.sh"
SIZE=${SIZE:-1G}
export RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5}
OUT=${OUT:-$(mktemp -d /tmp/nbdbench-qcow2.XXXXXX)}
[ -f "$HERE/../packages/devices/dist/index.js" ] || { echo "build first: pnpm exec tsc -b" >&2; exit 1; }
pass() { # NAME KIND WORKLOADS
  echo "=== $1: $3 ($2 image)" >&2
  OUT="$OUT/$1" SIZE="$SIZE" WORKLOADS="$3" "$HERE/compare.sh" \
    "qemu-nbd-10=$HERE/qcow2-server.sh qemu-nbd {DIR} {SOCK} {SIZE} $2" \
    "ours=$HERE/qcow2-server.sh ours {DIR} {SOCK} {SIZE} $2"
}
pass fresh-seq fresh "seqwrite"
pass fresh-rand fresh "randwrite_qd32"
pass allocated allocated "seqread seqwrite randread_qd32 randwrite_qd32"
