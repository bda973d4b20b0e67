#!/usr/bin/env bash
# Install the pinned Continue CLI (@continuedev/cli from npm, command `cn`) into an ignored
# cache directory of the repo, for the tests in tests/continue_cli.
# Idempotent: when the pinned version is already there it returns at once.
#
# Pinned to 1.5.47: the newest on npm. It runs on the system Node (>= 20). Layout:
#   .cache/continue/client/node_modules/.bin/cn
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/_npm_pinned.sh"
dest="${CLIBRIDGE_CONTINUE_DIR:-$here/.cache/continue}"
pkg="@continuedev/cli@1.5.47"
stamp="$dest/.installed"
exe="$dest/client/node_modules/.bin/cn"
if pinned_present "$stamp" "$pkg" "$exe"; then
  echo "continue already installed in $dest ($pkg)"
  exit 0
fi
start=$(date +%s)
rm -f "$stamp"
npm_install_into "$dest/client" "$pkg"
"$exe" --version >/dev/null
pinned_done "$stamp" "$pkg" "$dest" "$start"
