#!/usr/bin/env bash
# Create .venv and install clibridge into it (editable) with the given extras.
# Idempotent and fast when nothing changed: re-installs only when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
py="${PYTHON:-python3}"
venv="$root/.venv"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "clibridge needs Python >= 3.11 ($py is $("$py" --version 2>&1))" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
stamp="$venv/.clibridge-installed"
hash="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
# up to date when pyproject.toml is unchanged and the installed extras cover the wanted ones
# ("dev" includes everything; no extras are covered by any install)
case "$have" in
  "$hash [dev]") current=yes ;;
  "$hash [$extras]") current=yes ;;
  "$hash ["*"]") [ -z "$extras" ] && current=yes || current=no ;;
  *) current=no ;;
esac
want="$hash [$extras]"
if [ "$current" != yes ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --quiet -e "$spec"
  echo "$want" > "$stamp"
fi
