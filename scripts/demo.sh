#!/usr/bin/env bash
# The main job: serve a 1 GiB in-memory export on nbd://localhost:10809 and show it
# through our client (and libnbd's nbdinfo). Installs only what it uses first (one
# supported Node, pnpm, the workspace's packages, nbdinfo) and runs on that Node,
# whatever node the machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --demo
source scripts/node-lines.sh
export PATH="$(ensure_one_node 2>/dev/null):$PATH"
echo "demo: starting (node $(node --version))" >&2
exec node examples/dist/demo.js "$@"
