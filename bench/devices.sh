#!/bin/bash
# @nbd/devices' FileDevice against nbdkit's file plugin on the same file, once on
# /dev/shm (tmpfs) and once on a disk file, with nbdcopy (write, read) and fio 4 KiB
# random reads at QD1 and QD32 and random writes at QD32 (bench/run.sh workloads);
# plus a three-filter stack (stats ∘ blocksize ∘ offset) against no filters.
#
#   bench/devices.sh            (build first: pnpm exec tsc -b)
#
# Environment: SIZE (default 1G), DISK_DIR (default /var/tmp: a disk, not tmpfs),
# RUNS (default 3), FIO_RUNTIME (default 5 s), OUT (results root, default a new
# /tmp dir). Prints one compare.sh table per location; ratios are to nbdkit-file
# (ratio > 1 = faster than nbdkit).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/needs.sh"
. "$HERE/servers.sh"   # for $NODE
SIZE=${SIZE:-1G}; DISK_DIR=${DISK_DIR:-/var/tmp}
export RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5}
export WORKLOADS=${WORKLOADS:-seqwrite seqread randread_qd1 randread_qd32 randwrite_qd32}
OUT=${OUT:-$(mktemp -d /tmp/nbdbench-devices.XXXXXX)}
[ -f "$HERE/../packages/devices/dist/index.js" ] || { echo "build first: pnpm exec tsc -b" >&2; exit 1; }
for where in /dev/shm "$DISK_DIR"; do
  img="$where/nbdbench-devices-$$.img"
  truncate -s "$SIZE" "$img"
  echo "=== $img ($(df --output=fstype "$where" | tail -1))" >&2
  OUT="$OUT/$(basename "$where")" SIZE="$SIZE" "$HERE/compare.sh" \
    "nbdkit-file=nbdkit -f -U {SOCK} file $img" \
    "FileDevice=$NODE $HERE/serve-devices.mjs {SOCK} $img" \
    "3-filters=$NODE $HERE/serve-devices.mjs {SOCK} $img three"
  rm -f "$img"
done
