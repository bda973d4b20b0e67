#!/usr/bin/env bash
# Install the pinned real CLIs into an ignored cache directory of the repo.
# Idempotent: when the pinned versions are already there it returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${CLIBRIDGE_REALCLI_DIR:-$here/.cache/realcli}"
claude_pkg="@anthropic-ai/claude-code@2.1.197"
codex_pkg="@openai/codex@0.169.0"
stamp="$dest/.installed"
want="$claude_pkg $codex_pkg"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -x "$dest/node_modules/.bin/claude" ] && [ -x "$dest/node_modules/.bin/codex" ]; then
  echo "real CLIs already installed in $dest ($want)"
  exit 0
fi
mkdir -p "$dest"
cd "$dest"
[ -f package.json ] || echo '{"name":"clibridge-realcli","private":true}' > package.json
start=$(date +%s)
npm install --no-audit --no-fund --loglevel=error "$claude_pkg" "$codex_pkg"
echo "$want" > "$stamp"
echo "installed $want into $dest in $(( $(date +%s) - start )) s ($(du -sh "$dest" | cut -f1))"
