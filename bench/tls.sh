#!/bin/bash
# TLS, side by side in one run (X.509, one RSA-2048 certificate shared by every server):
#   1. servers: our server with `tls: require` (one thread, and `--threads 2`) against `nbdkit --tls=require`, both serving
#      memory, with plaintext nbdkit as the reference for what TLS costs; workloads of run.sh:
#      the handshake (connect + STARTTLS + TLS handshake + get_size + shutdown, libnbd),
#      nbdcopy sequential write and read, fio 4 KiB QD32 random read and write (libnbd engine);
#      ratios against nbdkit --tls=require.
#   2. client: our copy() over TLS against nbdcopy over TLS, from nbdkit --tls=require memory
#      (filled) to null:.
# The negotiated protocol and cipher suite are printed for each pair that can report them.
#
# libnbd's clients (fio's engine cannot pass tls-certificates, a "local file") look for the CA
# where root's default is, /etc/pki/libnbd. The whole run therefore happens in a private mount
# namespace with an overlay on /etc that vanishes with it: nothing on the system changes.
#   SIZE (default 2G), RUNS (default 3), FIO_RUNTIME (default 5), NODE (a supported node)
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/needs.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
if [ "${NBD_TLS_NS:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "bench/tls.sh: needs root (a private mount namespace)" >&2; exit 1; }
  for t in certtool nbdkit nbdcopy fio hyperfine unshare; do
    command -v "$t" >/dev/null || { echo "bench/tls.sh: $t missing (scripts/bootstrap.sh --peers; apt-get install hyperfine)" >&2; exit 1; }
  done
  WORK=$(mktemp -d /tmp/nbd-tls-bench.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
  export WORK NBD_TLS_NS=1
  exec unshare -m bash "$0" "$@"
fi

# ---- inside the namespace
log() { echo "[tls-bench $(date +%T)] $*" >&2; }
mount --make-rprivate /
mkdir -p "$WORK/etc-upper" "$WORK/etc-work" "$WORK/creds"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$WORK/etc-upper,workdir=$WORK/etc-work" /etc
CERTS=$WORK/creds
log "making an RSA-2048 CA and server certificate in $CERTS"
certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$CERTS/ca-key.pem" 2>/dev/null
printf 'cn = bench CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$WORK/ca.info"
certtool --generate-self-signed --load-privkey "$CERTS/ca-key.pem" --template "$WORK/ca.info" --outfile "$CERTS/ca-cert.pem" >/dev/null 2>&1
certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$CERTS/server-key.pem" 2>/dev/null
printf 'cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$WORK/server.info"
certtool --generate-certificate --load-privkey "$CERTS/server-key.pem" --load-ca-certificate "$CERTS/ca-cert.pem" \
  --load-ca-privkey "$CERTS/ca-key.pem" --template "$WORK/server.info" --outfile "$CERTS/server-cert.pem" >/dev/null 2>&1
mkdir -p /etc/pki/libnbd
cp "$CERTS/ca-cert.pem" /etc/pki/libnbd/

NODE=${NODE:-$(ls -d "${HOME:-/root}"/.cache/nbd-node/node-*/bin/node 2>/dev/null | sort -V | tail -1)}
export NODE
unset NODE_EXTRA_CA_CERTS # see client-copy.sh: parsing this machine's proxy CA bundle is not NBD's cost
(cd "$REPO" && PATH="$(dirname "$NODE"):$PATH" pnpm exec tsc -b >&2)
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
SIZE=${SIZE:-2G}
SERVE="$NODE $REPO/examples/dist/serve-memory.js --socket {SOCK} --size {SIZE}"

# ---- which cipher: our client to each server, and libnbd to ours (our server's log)
ciphers() {
  local sock=$WORK/probe.sock log=$WORK/probe.log
  local -A servers=(
    [nbdkit]="nbdkit -f -U $sock --tls=require --tls-certificates=$CERTS memory 64M"
    [ours]="$NODE $REPO/examples/dist/serve-memory.js -v --socket $sock --size 64M --tls-certificates $CERTS"
  )
  for name in nbdkit ours; do
    rm -f "$sock"; ${servers[$name]} >"$log" 2>&1 & local pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    nbdinfo --size "nbds+unix:///?socket=$sock" >/dev/null
    local ours
    ours=$(cd "$REPO/examples" && "$NODE" --input-type=module -e "
      import { Client } from '@nbd/client';
      const c = await Client.connect(process.argv[1], { tls: { mode: 'require', certificates: process.argv[2], hostname: 'localhost' } });
      console.log(c.tls.protocol + ' ' + c.tls.cipher); await c.abort();" "nbd+unix:///?socket=$sock" "$CERTS")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local them; them=$(sed -nE 's/.*TLS up \(([^,]+), ([^,)]+).*/\1 \2/p' "$log" | head -1)
    echo "| $name | @nbd/client: $ours | libnbd: ${them:-not reported by this server} |"
  done
}

echo "## TLS cost and ratios ($(date -u +%F), $(nproc) cores, $("$NODE" --version), $(nbdkit --version | head -1))"
echo
echo "| server | our client negotiated | libnbd (nbdcopy/fio) negotiated |"
echo "|---|---|---|"
ciphers
echo
log "servers: nbdkit --tls=require, ours with TLS (one thread, and two worker threads), plaintext nbdkit"
NBD_SCHEME=nbds+unix SIZE=$SIZE RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5} \
  WORKLOADS=${WORKLOADS:-handshake seqwrite seqread randread_qd32 randwrite_qd32} \
  bash "$HERE/compare.sh" \
  "nbdkit-tls=nbdkit -f -U {SOCK} --tls=require --tls-certificates=$CERTS memory {SIZE}" \
  "ours-tls=$SERVE --tls-certificates $CERTS" \
  "ours-tls-t2=$SERVE --threads 2 --tls-certificates $CERTS"
echo
log "plaintext reference (nbdkit memory, ours)"
SIZE=$SIZE RUNS=${RUNS:-3} FIO_RUNTIME=${FIO_RUNTIME:-5} WORKLOADS=${WORKLOADS:-handshake seqwrite seqread randread_qd32 randwrite_qd32} \
  bash "$HERE/compare.sh" "nbdkit-plain=nbdkit -f -U {SOCK} memory {SIZE}" "ours-plain=$SERVE"
echo

# ---- client: our copy over TLS vs nbdcopy over TLS
log "client copy over TLS"
SRC_SOCK=$WORK/src.sock
nbdkit -f -U "$SRC_SOCK" --tls=require --tls-certificates="$CERTS" memory "$SIZE" >"$WORK/src.log" 2>&1 & SRC_PID=$!
trap 'kill $SRC_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$SRC_SOCK" ] && break; sleep 0.05; done
SRC="nbds+unix:///?socket=$SRC_SOCK"
nbdcopy -- [ nbdkit pattern "$SIZE" ] "$SRC"
BYTES=$(nbdinfo --size "$SRC")
OURS_SRC="$SRC&tls-certificates=$CERTS&tls-hostname=localhost"
once() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null || { log "FAILED: $*"; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ours=() ours_t2=() theirs=()
for _ in $(seq "${RUNS:-3}"); do
  ours+=("$(once "$NODE" "$REPO/examples/dist/client-copy.js" "$OURS_SRC" null:)")
  ours_t2+=("$(once "$NODE" "$REPO/examples/dist/client-copy.js" --threads=2 "$OURS_SRC" null:)")
  theirs+=("$(once nbdcopy "$SRC" null:)")
done
o=$(median "${ours[@]}") o2=$(median "${ours_t2[@]}") t=$(median "${theirs[@]}")
gib() { echo "$BYTES / $1 / 1073741824" | bc -l; }
echo "| copy nbdkit --tls=require memory → null: ($SIZE, median of ${RUNS:-3}) | GiB/s | ratio ours/nbdcopy |"
echo "|---|---|---|"
printf '| nbdcopy (4 connections) | %.3f | 1.00 |\n' "$(gib "$t")"
printf '| @nbd/copy (4 connections, one thread) | %.3f | %.2f |\n' "$(gib "$o")" "$(echo "$t / $o" | bc -l)"
printf '| @nbd/copy --threads=2 | %.3f | %.2f |\n' "$(gib "$o2")" "$(echo "$t / $o2" | bc -l)"
