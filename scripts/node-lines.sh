# Sourced (not run) by the other scripts: the supported Node lines, pinned, and where
# their binaries live. The binaries come from the npm registry's node-linux-<arch>
# packages (the only registry CI reaches), unpacked once into a cache and reused.
#   NODE_LINES     every supported line, oldest first
#   NODE_DEV       the line that builds, lints and runs the demo
#   node_bin V     path of that version's node (after ensure_node V)
#   ensure_node V  fetch and unpack V unless the cache already has it; fails loudly
#   node_name V    "node 22" (how a line is named in results)
#   ensure_one_node  prints the bin directory of one supported node: the machine's own
#                  when it is a supported line (nothing downloaded), else NODE_DEV's

NODE_LINES=(22.23.3 24.21.0 26.12.1)
NODE_OLDEST=${NODE_LINES[0]}
NODE_NEWEST=${NODE_LINES[${#NODE_LINES[@]}-1]}
NODE_DEV=24.21.0
NODE_CACHE=${NBD_NODE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nbd-node}

node_dir() { echo "$NODE_CACHE/node-$1"; }
node_bin() { echo "$NODE_CACHE/node-$1/bin/node"; }
node_name() { echo "node ${1%%.*}"; }

ensure_node() {
  local v=$1 dir bin arch tmp
  dir=$(node_dir "$v")
  bin=$(node_bin "$v")
  if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "v$v" ]; then return 0; fi
  case $(uname -m) in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "node-lines: no node-linux package for $(uname -m)" >&2; return 1 ;;
  esac
  echo "node-lines: npm pack node-linux-$arch@$v into $dir (about 50 MB)" >&2
  mkdir -p "$NODE_CACHE"
  tmp=$(mktemp -d "$NODE_CACHE/.fetch-$v.XXXXXX")
  # The package is the official binary wrapped for npm: package/bin/node, include/, share/.
  if ! (cd "$tmp" && npm pack --silent "node-linux-$arch@$v" >/dev/null && tar xzf ./*.tgz) ||
    [ "$("$tmp/package/bin/node" --version 2>/dev/null)" != "v$v" ]; then
    rm -rf "$tmp"
    echo "node-lines: could not fetch node $v (npm pack node-linux-$arch@$v)" >&2
    return 1
  fi
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  rm -rf "$tmp"
}

ensure_one_node() {
  local own major
  own=$(command -v node || true)
  if [ -n "$own" ]; then
    major=$("$own" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    for v in "${NODE_LINES[@]}"; do
      if [ "$major" = "${v%%.*}" ]; then dirname "$own"; return 0; fi
    done
    # Said once: when that node is not fetched yet.
    [ -x "$(node_bin "$NODE_DEV")" ] ||
      echo "node-lines: this machine's node is $("$own" --version 2>/dev/null) (supported: ${NODE_LINES[*]%%.*}); fetching node $NODE_DEV" >&2
  fi
  ensure_node "$NODE_DEV" || return 1
  echo "$(node_dir "$NODE_DEV")/bin"
}
