#!/usr/bin/env bash
# The main job: serve a 1 GiB in-memory export on nbd://localhost:10809 and show it
# through our client (and nbdinfo when installed). Installs what it needs first and
# runs on a supported Node line (NODE_DEV), whatever node the machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --peers
source scripts/node-lines.sh
export PATH="$(node_dir "$NODE_DEV")/bin:$PATH"
exec node examples/dist/demo.js "$@"
