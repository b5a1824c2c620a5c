#!/usr/bin/env bash
# The newcomer's first minute, as close to a fresh machine as this one allows: a copy
# of the work tree (what `git clone` would give, plus uncommitted changes), an empty
# HOME (no ~/.cache, no pnpm store, no npm prefix of ours), and a PATH without the
# machine's pnpm. Then, as the README says:
#   npm install            stops at once and says what to run instead
#   npm run demo -- --exit serves, reads back, and nbdinfo shows the export
#   npm run nbd -- --version
#   bootstrap for the tests (--all-lines --peers --vm) creates every directory it uses
# Download caches are seeded by copying archives (npm's cache, pnpm's store; the
# backports .debs sit in apt's own archive cache), so nothing is downloaded twice;
# every directory the scripts write into is theirs to create.
# Also: no package archive's host name anywhere in the repository.
#   test/fresh/run.sh [--results FILE]   (FILE: { passed, failed: [names] })
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
results=""
[ "${1:-}" = --results ] && results=$2

tmp=$(mktemp -d /tmp/nbd-fresh.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=()
pass() { echo "fresh: ok: $1" >&2; passed=$((passed + 1)); }
fail() { echo "fresh: FAILED: $1" >&2; failed+=("$1"); }

# --- the machine as a newcomer has it ---
mkdir -p "$tmp/repo" "$tmp/home" "$tmp/prefix" "$tmp/bin"
git -C "$repo" ls-files -z -co --exclude-standard | (cd "$repo" && tar --null -T - --ignore-failed-read -cf - 2>/dev/null) |
  tar -xf - -C "$tmp/repo"
# Seeds: the download caches of npm and pnpm (made by npm and pnpm themselves on a new machine).
[ -d "$HOME/.npm/_cacache" ] && mkdir -p "$tmp/home/.npm" && cp -a "$HOME/.npm/_cacache" "$tmp/home/.npm/"
store=$(pnpm store path 2>/dev/null || true)
if [ -n "$store" ] && [ -d "$store" ]; then
  mkdir -p "$tmp/home/.local/share/pnpm/store" && cp -al "$store" "$tmp/home/.local/share/pnpm/store/"
fi
# /usr/bin without pnpm (and /bin is /usr/bin here): the machine's node and npm stay.
for f in /usr/bin/*; do
  case ${f##*/} in pnpm | pnpx) ;; *) ln -s "$f" "$tmp/bin/${f##*/}" ;; esac
done
# The machine's environment stays (its CA bundle and proxy settings are the machine's, not
# ours); what the project may have left in it goes.
fresh_env=(env -u XDG_CACHE_HOME -u NBD_NODE_CACHE -u NBD_QEMU10_DIR -u VM_CACHE -u npm_config_store_dir
  "HOME=$tmp/home" "PATH=$tmp/bin:/usr/sbin:/sbin" "npm_config_prefix=$tmp/prefix")
run() { (cd "$tmp/repo" && "${fresh_env[@]}" "$@"); }

node_major=$(run node -p 'process.versions.node.split(".")[0]')
echo "fresh: the machine's node is $(run node --version), npm $(run npm --version)" >&2

# --- 1. npm install: stops before it installs anything, with one message ---
out=$(run npm install 2>&1)
if [ -d "$tmp/repo/node_modules" ]; then fail 'npm install stops before installing anything (node_modules was made)'
elif ! grep -q 'npm run setup' <<<"$out"; then fail "npm install says to run npm run setup (it said: $(tail -n3 <<<"$out" | tr '\n' ' '))"
else pass 'npm install stops at once and says to run npm run setup'; fi

# --- 2. the demo, timed to its "Serving" line ---
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
start=$(date +%s%N)
run npm run demo -- --exit --port "$port" >"$tmp/demo.out" 2>"$tmp/demo.err" &
demo_pid=$!
first=""
while kill -0 "$demo_pid" 2>/dev/null; do
  if [ -z "$first" ] && grep -q '^Serving ' "$tmp/demo.out"; then first=$(date +%s%N); fi
  sleep 0.2
done
wait "$demo_pid"; demo_rc=$?
[ -n "$first" ] || { grep -q '^Serving ' "$tmp/demo.out" && first=$(date +%s%N); }
if [ "$demo_rc" != 0 ]; then fail "npm run demo exits 0 (rc $demo_rc: $(tail -n5 "$tmp/demo.err" | tr '\n' ' '))"
elif ! grep -q 'read back identical' "$tmp/demo.out"; then fail 'npm run demo writes and reads back through our client'
elif ! grep -q 'export-size: 1073741824' "$tmp/demo.out"; then fail 'npm run demo shows the export through nbdinfo'
else pass "npm run demo from an empty home ($(((first - start) / 1000000000)) s to its Serving line)"; fi
downloads=$(grep -c 'npm pack node-linux' "$tmp/demo.err")
expected=1; [ "$node_major" -ge 22 ] 2>/dev/null && expected=0
if [ "$downloads" -le "$expected" ]; then pass "the demo fetches at most one Node ($downloads)"
else fail "the demo fetches at most one Node (it fetched $downloads)"; fi
if [ "$(grep -c '^bootstrap: \|^node-lines: \|^demo: ' "$tmp/demo.err")" -ge 3 ]; then pass 'the demo says what each step does'
else fail 'the demo says what each step does'; fi

# --- 3. the checkout's nbd command ---
if out=$(run npm run --silent nbd -- --version 2>&1) && grep -qE '^nbd [0-9]' <<<"$out"; then pass "npm run nbd -- --version ($out)"
else fail "npm run nbd -- --version (said: $out)"; fi

# --- 4. the test command's bootstrap, from the same empty home ---
rm -rf "$tmp/home/.cache" # the demo made some of it: the tests' bootstrap must make it again
if run bash scripts/bootstrap.sh --all-lines --peers --vm >"$tmp/boot.out" 2>&1; then
  pass 'bootstrap --all-lines --peers --vm from an empty home'
else
  fail "bootstrap --all-lines --peers --vm from an empty home ($(tail -n5 "$tmp/boot.out" | tr '\n' ' '))"
fi
for d in nbd-node nbd-qemu-10 nbd-test-vm; do
  [ -d "$tmp/home/.cache/$d" ] || fail "bootstrap made ~/.cache/$d"
done
[ -x "$tmp/prefix/bin/pnpm" ] && pass 'bootstrap installed pnpm with npm' || fail 'bootstrap installed pnpm with npm'

# --- 5. no package archive's host name in the repository ---
hosts='deb\.debian\.org|security\.debian\.org|ftp\.[a-z.]*debian\.org|snapshot\.debian\.org|archive\.ubuntu\.com|registry\.npmjs\.org|registry\.yarnpkg\.com|nodesource\.com|pypi\.org'
if hits=$(git -C "$repo" grep -nIE "$hosts" -- . ':!test/fresh/run.sh'); then fail "no package archive host in the repository: $hits"
else pass 'no package archive host name in the repository'; fi

echo "fresh: $passed passed, ${#failed[@]} failed" >&2
if [ -n "$results" ]; then
  node -e 'const [f, p, ...failed] = process.argv.slice(1); require("fs").writeFileSync(f, JSON.stringify({ passed: +p, failed }))' \
    "$results" "$passed" "${failed[@]}"
fi
[ ${#failed[@]} = 0 ]
