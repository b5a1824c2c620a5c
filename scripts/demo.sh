#!/usr/bin/env bash
# The main job: serve a 1 GiB in-memory export on nbd://localhost:10809 and show it
# through our client (and nbdinfo when installed). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --peers
exec node examples/dist/demo.js "$@"
