#!/usr/bin/env bash
# A one-node Ceph for the tests (Debian 12's Ceph 16.2): one monitor, one OSD on memstore
# (RAM, no disk), radosgw (S3) with an S3 user, cephx, loopback only, everything under DIR.
#   ceph.sh start DIR   prints KEY=VALUE lines (CEPH_CONF, CEPH_KEYRING, S3_ENDPOINT, S3_ACCESS_KEY,
#                       S3_SECRET_KEY); exits non-zero, with the daemons' log tails, if one fails to start
#   ceph.sh stop DIR    kills the daemons (the cluster is disposable) and waits for them
# Environment: MON_PORT (default 3300), RGW_PORT (default 7480): free loopback ports;
# WATCH_PID: a process whose exit stops the cluster and removes DIR (a test run that dies
# without its teardown leaves no daemon behind).
# Packages: ceph-mon ceph-osd radosgw (scripts/bootstrap.sh --peers).
set -euo pipefail
cmd=${1:?usage: ceph.sh start|stop DIR}
D=${2:?usage: ceph.sh start|stop DIR}
D=$(cd "$D" && pwd)
C=$D/ceph.conf
S3_ACCESS_KEY=nbdtestkey
S3_SECRET_KEY=nbdtestsecret

# pid_of NAME: the pid a daemon wrote, if it is still running.
pid_of() {
  local f=$D/run/$1.pid p
  [ -s "$f" ] || return 1
  p=$(cat "$f")
  kill -0 "$p" 2>/dev/null && echo "$p"
}

# stop_all: SIGKILL, and wait until each daemon is gone. The cluster is thrown away with
# its directory (memstore keeps nothing), and SIGTERM costs 2 s per daemon.
stop_all() {
  local name p i
  for name in rgw osd mon; do
    p=$(pid_of "$name") || continue
    kill -9 "$p" 2>/dev/null || continue
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
}

if [ "$cmd" = stop ]; then
  p=$(pid_of reaper) && kill "$p" 2>/dev/null || true
  stop_all
  exit 0
fi
[ "$cmd" = start ] || { echo "ceph.sh: unknown command $cmd (start, stop)" >&2; exit 2; }

MON_PORT=${MON_PORT:-3300}
RGW_PORT=${RGW_PORT:-7480}
ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(ms)
say() { echo "ceph.sh: $* ($(($(ms) - T0)) ms)" >&2; }
# fail WHAT: the message and the last lines of every log, then stop what started.
fail() {
  echo "ceph.sh: $*" >&2
  for f in "$D"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  stop_all
  exit 1
}
trap 'fail "a step failed (line $LINENO)"' ERR

mkdir -p "$D/mon" "$D/osd0" "$D/run" "$D/log" "$D/rgw" "$D/crash"
FSID=$(cat /proc/sys/kernel/random/uuid)
# Every path a daemon or the ceph command writes to is under $D (the defaults are
# /var/lib/ceph, /var/log/ceph and /run/ceph).
cat >"$C" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
mon cluster log file = $D/log/cluster.log
crash dir = $D/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
[mon]
mon data = $D/mon
[osd]
osd data = $D/osd\$id
osd objectstore = memstore
memstore device bytes = 1073741824
[client.rgw.a]
keyring = $D/rgw/keyring
rgw data = $D/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
CONF

# Keys with their caps go into the monitor's first keyring: no `ceph auth` round trips later.
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/osd0/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/rgw/keyring" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' >/dev/null
ceph-authtool "$D/keyring" --import-keyring "$D/osd0/keyring" >/dev/null
ceph-authtool "$D/keyring" --import-keyring "$D/rgw/keyring" >/dev/null
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" 2>>"$D/log/mkfs.log"
ceph-mon -c "$C" -i a --pid-file "$D/run/mon.pid" 2>>"$D/log/daemons.log"

if [ -n "${WATCH_PID:-}" ]; then
  # Detached from the caller's pipes, in its own session: it outlives the caller by design.
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; rm -f "$3/run/reaper.pid"; bash "$2" stop "$3"; rm -rf "$3"' \
    reaper "$WATCH_PID" "$0" "$D" </dev/null >/dev/null 2>&1 &
  echo $! >"$D/run/reaper.pid"
fi

UUID=$(cat /proc/sys/kernel/random/uuid)
ID=$(ceph -c "$C" --connect-timeout 20 osd new "$UUID" 0)
[ "$ID" = 0 ] || fail "ceph osd new gave id $ID, not 0"
ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$UUID" --keyring "$D/osd0/keyring" 2>>"$D/log/mkfs.log"
ceph-osd -c "$C" -i 0 --keyring "$D/osd0/keyring" --pid-file "$D/run/osd.pid" 2>>"$D/log/daemons.log"
# The RBD pool, for librbd and qemu's rbd: driver; the pool's application tag is what `rbd pool init` sets.
ceph -c "$C" osd pool create rbd 8 >/dev/null 2>&1
ceph -c "$C" osd pool application enable rbd rbd >/dev/null 2>&1
say "monitor, OSD and pool rbd up"

radosgw -c "$C" -n client.rgw.a --pid-file "$D/run/rgw.pid" 2>>"$D/log/daemons.log"
# Ready when an anonymous GET / (ListBuckets) answers 200.
status() (
  exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$RGW_PORT" || exit 1
  printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  IFS= read -r -t 2 line <&3 || true
  [[ $line == "HTTP/1."?" 200"* ]]
)
ok=0
for _ in $(seq 1 240); do
  if status; then ok=1; break; fi
  pid_of rgw >/dev/null || [ ! -s "$D/run/rgw.pid" ] || fail "radosgw exited"
  sleep 0.25
done
[ $ok = 1 ] || fail "radosgw did not answer on 127.0.0.1:$RGW_PORT within 60 s"
radosgw-admin -c "$C" user create --uid=nbdtest --display-name=nbdtest \
  --access-key="$S3_ACCESS_KEY" --secret="$S3_SECRET_KEY" >/dev/null 2>>"$D/log/admin.log"
say "radosgw answering on 127.0.0.1:$RGW_PORT"
trap - ERR
echo "CEPH_CONF=$C"
echo "CEPH_KEYRING=$D/keyring"
echo "S3_ENDPOINT=http://127.0.0.1:$RGW_PORT"
echo "S3_ACCESS_KEY=$S3_ACCESS_KEY"
echo "S3_SECRET_KEY=$S3_SECRET_KEY"
