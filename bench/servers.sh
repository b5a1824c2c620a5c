# Server presets for compare.sh (sourced).  Each srv_<name> DIR SIZE starts one NBD
# server listening only on a fresh unix socket DIR/nbd.sock (or loopback TCP for *-tcp),
# writes its PID to DIR/server.pid and prints the URI.  Backing files go to /dev/shm
# and are removed by srv_cleanup DIR.
#
# A raw command may be given to compare.sh instead of a preset name: it must run in the
# FOREGROUND and may use the placeholders {SOCK} {DIR} {SIZE}, e.g.
#   'nbdkit -f -U {SOCK} memory {SIZE} allocator=malloc'

srv_list="nbdkit-memory nbdkit-memory-t1 nbdkit-memory-tcp nbdkit-null nbdkit-file qemu-nbd qemu-nbd-nocache nbd-server nbd-ts nbd-ts-t2"

_bg() { # DIR CMD... : start in background (own output in DIR/server.log), record pid
  local d=$1; shift
  "$@" >"$d/server.log" 2>&1 </dev/null &
  echo $! >"$d/server.pid"
}
_img() { # DIR SIZE -> path of a fresh sparse raw image on tmpfs
  local img; img=$(mktemp /dev/shm/nbdbench-img.XXXXXX); truncate -s "$2" "$img"; echo "$img" >"$1/backing"; echo "$img"
}
_freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

srv_nbdkit-memory()    { _bg "$1" nbdkit -f -U "$1/nbd.sock" memory "$2"; echo "nbd+unix:///?socket=$1/nbd.sock"; }
srv_nbdkit-memory-t1() { _bg "$1" nbdkit -f -t 1 -U "$1/nbd.sock" memory "$2"; echo "nbd+unix:///?socket=$1/nbd.sock"; }
srv_nbdkit-null()      { _bg "$1" nbdkit -f -U "$1/nbd.sock" null "$2"; echo "nbd+unix:///?socket=$1/nbd.sock"; }
srv_nbdkit-memory-tcp() {
  local p; p=$(_freeport)
  _bg "$1" nbdkit -f -i 127.0.0.1 -p "$p" memory "$2"; echo "nbd://127.0.0.1:$p"
}
srv_nbdkit-file() { local img; img=$(_img "$1" "$2"); _bg "$1" nbdkit -f -U "$1/nbd.sock" file "$img"; echo "nbd+unix:///?socket=$1/nbd.sock"; }
# qemu-nbd: -t keep running after the last client, -e 16 allow parallel clients (also
# makes it advertise multi-conn, so nbdcopy opens 4 connections).
srv_qemu-nbd() {
  local img; img=$(_img "$1" "$2")
  _bg "$1" qemu-nbd -f raw -x '' -k "$1/nbd.sock" -t -e 16 --discard=unmap "$img"; echo "nbd+unix:///?socket=$1/nbd.sock"
}
# --cache=none = O_DIRECT; tmpfs accepts O_DIRECT since Linux 6.6 but there is no
# device underneath, so this only changes qemu's code path (no page-cache bypass gain).
srv_qemu-nbd-nocache() {
  local img; img=$(_img "$1" "$2")
  _bg "$1" qemu-nbd -f raw -x '' -k "$1/nbd.sock" -t -e 16 --discard=unmap --cache=none --aio=threads "$img"; echo "nbd+unix:///?socket=$1/nbd.sock"
}
# nbd-server 3.24: unixsock in [generic]; it daemonizes and forks one process per client.
# It has no default export name, so the export is called "bench".
srv_nbd-server() {
  local img; img=$(_img "$1" "$2")
  cat >"$1/nbd-server.conf" <<CONF
[generic]
    unixsock = $1/nbd.sock
    user = $(id -un)
    group = $(id -gn)
    allowlist = true
[bench]
    exportname = $img
    filesize = $2
CONF
  nbd-server -C "$1/nbd-server.conf" -p "$1/server.pid" >"$1/server.log" 2>&1 </dev/null
  for _ in $(seq 50); do [ -s "$1/server.pid" ] && break; sleep 0.1; done
  echo "nbd+unix:///bench?socket=$1/nbd.sock"
}

# NBD_SCHEME=nbds+unix makes the URI ask for TLS (bench/tls.sh).
srv_raw() { # DIR SIZE CMD : foreground command with placeholders
  local cmd=$3
  cmd=${cmd//\{SOCK\}/$1/nbd.sock}; cmd=${cmd//\{DIR\}/$1}; cmd=${cmd//\{SIZE\}/$2}
  _bg "$1" sh -c "exec $cmd"; echo "${NBD_SCHEME:-nbd+unix}:///?socket=$1/nbd.sock"
}

srv_cleanup() { # DIR : stop the server by its recorded PID, remove backing file
  local d=$1 pid
  pid=$(cat "$d/server.pid" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  [ -f "$d/backing" ] && rm -f "$(cat "$d/backing")"
  rm -rf "$d"
}

# Our TypeScript server (examples/serve-memory.ts; build first: pnpm exec tsc -b), run by
# $NODE (default: the newest supported node the bootstrap cached, else `node`). NBD_TS_REPO
# picks another checkout's build (bench/before-after.sh uses it for the old commit).
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE=${NODE:-$(ls -d "${HOME:-/root}"/.cache/nbd-node/node-*/bin/node 2>/dev/null | sort -V | tail -1)}
NODE=${NODE:-node}
srv_nbd-ts() { _bg "$1" "$NODE" "${NBD_TS_REPO:-$_repo}/examples/dist/serve-memory.js" --socket "$1/nbd.sock" --size "$2"; echo "nbd+unix:///?socket=$1/nbd.sock"; }
# The same on 2 worker threads (one per core here) over a SharedMemoryDevice.
srv_nbd-ts-t2() { _bg "$1" "$NODE" "${NBD_TS_REPO:-$_repo}/examples/dist/serve-memory.js" --socket "$1/nbd.sock" --size "$2" --threads 2; echo "nbd+unix:///?socket=$1/nbd.sock"; }
