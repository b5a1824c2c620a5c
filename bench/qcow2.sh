#!/bin/bash
# qcow2: our QcowDevice against qemu-nbd 10.0 (-f qcow2, its defaults: writeback cache,
# thread-pool AIO) on the same kind of image in the same directory, with bench/run.sh's
# workloads: nbdcopy sequential write and read, fio 4 KiB random read and write at QD32.
# Three passes, each on a new image per server: a fresh image written once by nbdcopy
# (every write allocates), a fresh 32 GiB image written at random for FRESH_RUNTIME
# seconds (large enough that nearly every write allocates a cluster), and a fully
# allocated one (preallocation=falloc) for reads and in-place writes.
#
#   bench/qcow2.sh              (build first: pnpm exec tsc -b)
#
# Environment: SIZE (default 1G), RUNS (default 3; the fresh sequential pass runs once),
# FIO_RUNTIME (default 5 s), FRESH_SIZE (default 32G), FRESH_RUNTIME (default 2 s), OUT
# (results root, default a new /tmp dir), QEMU10 (qemu 10's bin directory). Images
# live in compare.sh's per-server directory under /tmp. Ratios are ours / qemu-nbd.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/needs.sh"
SIZE=${SIZE:-1G}
export RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5}
OUT=${OUT:-$(mktemp -d /tmp/nbdbench-qcow2.XXXXXX)}
[ -f "$HERE/../packages/devices/dist/index.js" ] || { echo "build first: pnpm exec tsc -b" >&2; exit 1; }
FRESH_SIZE=${FRESH_SIZE:-32G}; FRESH_RUNTIME=${FRESH_RUNTIME:-2}
pass() { # NAME KIND WORKLOADS [ENV=VALUE…]
  echo "=== $1: $3 ($2 image)" >&2
  local name=$1 kind=$2 workloads=$3; shift 3
  env OUT="$OUT/$name" SIZE="$SIZE" WORKLOADS="$workloads" "$@" "$HERE/compare.sh" \
    "qemu-nbd-10=$HERE/qcow2-server.sh qemu-nbd {DIR} {SOCK} {SIZE} $kind" \
    "ours=$HERE/qcow2-server.sh ours {DIR} {SOCK} {SIZE} $kind"
}
pass fresh-seq fresh "seqwrite" RUNS=1
pass fresh-rand fresh "randwrite_qd32" SIZE="$FRESH_SIZE" FIO_RUNTIME="$FRESH_RUNTIME"
pass allocated allocated "seqread seqwrite randread_qd32 randwrite_qd32"
