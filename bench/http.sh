#!/bin/bash
# HttpDevice (`nbd serve http URL`) against nbdkit's curl plugin on the same nginx URL:
# sequential read (nbdcopy to null:) and fio 4 KiB random reads at QD1 and QD32
# (bench/run.sh workloads), then each server's peak RSS and CPU time (user + system)
# during one 4-connection nbdcopy: CPU seconds per GiB are less disturbed by other load
# on the machine than throughput.
# nginx (Debian's) serves one image from tmpfs on a loopback port, with its own
# configuration in a temp dir.
#
#   bench/http.sh            (build first: pnpm exec tsc -b)
#
# Environment: SIZE (image size, default 1G), RUNS (default 3), FIO_RUNTIME (default 5 s),
# WORKLOADS (default: seqread randread_qd1 randread_qd32), OUT (results root, default a
# new /tmp dir). Prints one compare.sh table; ratios are to nbdkit-curl (> 1 = faster).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/needs.sh"
. "$HERE/servers.sh" # for $NODE and _freeport
command -v nginx >/dev/null || { echo "bench: nginx is missing (apt-get install nginx)" >&2; exit 1; }
CLI="$HERE/../packages/cli/dist/bin.js"
[ -f "$CLI" ] || { echo "build first: pnpm exec tsc -b" >&2; exit 1; }
SIZE=${SIZE:-1G}
export RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5}
export WORKLOADS=${WORKLOADS:-seqread randread_qd1 randread_qd32}
OUT=${OUT:-$(mktemp -d /tmp/nbdbench-http.XXXXXX)}

D=$(mktemp -d /dev/shm/nbdbench-http.XXXXXX)
chmod 755 "$D" # nginx's workers (nobody) read the image
mkdir -p "$D/root" "$D/tmp"
trap '[ -s "$D/nginx.pid" ] && kill "$(cat "$D/nginx.pid")" 2>/dev/null; sleep 0.2; rm -rf "$D"' EXIT INT TERM
echo "bench: a $SIZE random image on tmpfs" >&2
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$D/root/disk.raw"
chmod 644 "$D/root/disk.raw"
PORT=$(_freeport)
# keepalive_requests high: both clients keep their connections (nginx's default closes one every 1000 requests).
cat >"$D/nginx.conf" <<CONF
worker_processes 2;
pid $D/nginx.pid;
error_log $D/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $D/tmp/body; proxy_temp_path $D/tmp/proxy; fastcgi_temp_path $D/tmp/fastcgi;
  uwsgi_temp_path $D/tmp/uwsgi; scgi_temp_path $D/tmp/scgi;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PORT; location / { root $D/root; } }
}
CONF
nginx -p "$D" -e "$D/error.log" -c "$D/nginx.conf" || { cat "$D/error.log" >&2; exit 1; }
URL="http://127.0.0.1:$PORT/disk.raw"
for _ in $(seq 50); do [ -s "$D/nginx.pid" ] && break; sleep 0.1; done

OUT="$OUT" SIZE="$SIZE" "$HERE/compare.sh" \
  "nbdkit-curl=nbdkit -f -U {SOCK} curl url=$URL" \
  "nbd-http=$NODE $CLI serve -U {SOCK} http $URL" \
  "nbd-http-t2=$NODE $CLI serve -t 2 -U {SOCK} http $URL"

# Peak RSS (VmHWM) and CPU time of each server (and of nginx) during one nbdcopy -C 4 to null:.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
peak() { # LABEL CMD... (the command listens on $D/rss.sock)
  local label=$1 pid t0 n0 ng; shift
  rm -f "$D/rss.sock"
  "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$D/rss.sock" ] && break; sleep 0.1; done
  ng=$(pgrep -P "$(cat "$D/nginx.pid")" | tr '\n' ' ')
  t0=$(ticks "$pid"); n0=$(for p in $ng; do ticks "$p"; done | awk '{ s += $1 } END { print s + 0 }')
  nbdcopy -C 4 --no-extents "nbd+unix:///?socket=$D/rss.sock" null: || echo "bench: nbdcopy failed against $label" >&2
  local t1 n1; t1=$(ticks "$pid"); n1=$(for p in $ng; do ticks "$p"; done | awk '{ s += $1 } END { print s + 0 }')
  awk -v l="$label" -v hwm="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")" -v t=$((t1 - t0)) -v n=$((n1 - n0)) -v hz="$HZ" \
    -v gib="$(numfmt --from=iec "$SIZE")" 'BEGIN { g = gib / 2^30; printf "| %s | %.0f MiB | %.2f | %.2f |\n", l, hwm / 1024, t / hz / g, n / hz / g }'
  kill "$pid"; wait "$pid" 2>/dev/null
}
echo
echo "| server, nbdcopy -C 4 to null: | peak RSS | server CPU s/GiB | nginx CPU s/GiB |"
echo "|---|---|---|---|"
peak nbdkit-curl nbdkit -f -U "$D/rss.sock" curl "url=$URL"
peak nbd-http "$NODE" "$CLI" serve -U "$D/rss.sock" http "$URL"
peak nbd-http-t2 "$NODE" "$CLI" serve -t 2 -U "$D/rss.sock" http "$URL"
