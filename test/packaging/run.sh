#!/usr/bin/env bash
# Packaging checks (test/packaging/run.mjs) on every supported Node line, run by a
# supported node whatever the machine's is. Needs the build (tsc -b) and the peers
# (scripts/bootstrap.sh --peers). Extra arguments go to run.mjs (--results FILE).
# The Node < 22 checks run the machine's own node (NBD_OLD_NODE, else /usr/bin/node).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/node-lines.sh
args=()
for v in "${NODE_LINES[@]}"; do args+=(--node "$(node_name "$v")=$(node_bin "$v")"); done
export PATH="$(node_dir "$NODE_DEV")/bin:/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
exec node test/packaging/run.mjs "${args[@]}" --old-node "${NBD_OLD_NODE:-/usr/bin/node}" "$@"
