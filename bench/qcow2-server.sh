#!/bin/bash
# One qcow2 server for bench/qcow2.sh, on a fresh image in DIR:
#   bench/qcow2-server.sh ours|qemu-nbd DIR SOCKET SIZE fresh|allocated
# fresh: qemu-img create (nothing allocated); allocated: preallocation=falloc (every
# cluster allocated, its data range fallocated). Then execs the server in the foreground.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/servers.sh"   # for $NODE
QEMU10=${QEMU10:-${XDG_CACHE_HOME:-$HOME/.cache}/nbd-qemu-10/usr/bin}
server=$1 dir=$2 sock=$3 size=$4 kind=$5
img=$dir/disk.qcow2
opts=""; [ "$kind" = allocated ] && opts="-o preallocation=falloc"
"$QEMU10/qemu-img" create -q -f qcow2 $opts "$img" "$size"
case $server in
  ours) exec "$NODE" "$HERE/serve-qcow2.mjs" "$sock" "$img" ;;
  qemu-nbd) exec "$QEMU10/qemu-nbd" -f qcow2 -x '' -k "$sock" -t -e 16 --discard=unmap "$img" ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
esac
