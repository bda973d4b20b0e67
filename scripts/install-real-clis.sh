#!/usr/bin/env bash
# Install the pinned real CLIs into an ignored cache directory of the repo.
# Idempotent: when the pinned versions are already there it returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/_npm_pinned.sh"
dest="${CLIBRIDGE_REALCLI_DIR:-$here/.cache/realcli}"
claude_pkg="@anthropic-ai/claude-code@2.1.197"
codex_pkg="@openai/codex@0.169.0"
stamp="$dest/.installed"
want="$claude_pkg $codex_pkg"
if pinned_present "$stamp" "$want" "$dest/node_modules/.bin/claude" "$dest/node_modules/.bin/codex"; then
  echo "real CLIs already installed in $dest ($want)"
  exit 0
fi
start=$(date +%s)
rm -f "$stamp"
npm_install_into "$dest" "$claude_pkg" "$codex_pkg"
pinned_done "$stamp" "$want" "$dest" "$start"
