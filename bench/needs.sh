# Sourced by the bench scripts: installs what they run (hyperfine and bc besides the
# interop peers) when missing, as the bootstrap does for the tests, so a bench on a
# fresh machine measures instead of printing n/a.
_bench_pkgs="hyperfine bc fio nbdkit libnbd-bin python3-libnbd qemu-utils nbd-server gnutls-bin"
_bench_missing=""
for _p in $_bench_pkgs; do
  dpkg-query -W -f='${Status}' "$_p" 2>/dev/null | grep -q 'install ok installed' || _bench_missing="$_bench_missing $_p"
done
if [ -n "$_bench_missing" ]; then
  echo "bench: apt-get install$_bench_missing" >&2
  _sudo=""; [ "$(id -u)" = 0 ] || _sudo=sudo
  $_sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -q --no-install-recommends $_bench_missing >/dev/null ||
    { echo "bench: could not install$_bench_missing" >&2; exit 1; }
fi
unset _p _sudo _bench_pkgs _bench_missing
