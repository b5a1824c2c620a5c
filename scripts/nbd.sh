#!/usr/bin/env bash
# The `nbd` command of this checkout (packages/cli/dist/bin.js) on a supported Node:
# the machine's own when it is one, else the one scripts/node-lines.sh keeps (fetched
# once). `npm run nbd -- ARGS` (or `pnpm nbd ARGS`) runs it in the directory it was
# typed in, so relative paths mean what they say.
#   bash scripts/nbd.sh ARGS    also works, from anywhere
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for pkg in "$root"/packages/*/; do
  if [ ! -f "$pkg/dist/index.js" ]; then
    echo "nbd: this checkout is not built yet: run \`npm run setup\` in $root (it installs pnpm and the packages, and builds)" >&2
    exit 1
  fi
done
source "$root/scripts/node-lines.sh"
bindir=$(ensure_one_node) || exit 1
# npm and pnpm run scripts in the package root; INIT_CWD is where the command was typed.
if [ "${npm_lifecycle_event:-}" = nbd ] && [ -n "${INIT_CWD:-}" ]; then cd "$INIT_CWD" || exit 1; fi
exec "$bindir/node" "$root/packages/cli/dist/bin.js" "$@"
