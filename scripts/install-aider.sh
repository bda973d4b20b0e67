#!/usr/bin/env bash
# Install the pinned Aider (aider-chat from PyPI) into its own venv in an ignored cache
# directory of the repo, for the tests that run it against clibridge (tests/aider).
# Idempotent: when the pinned version is already there it returns at once.
#
# Pinned to 0.86.2: the newest on PyPI, and it installs on Python 3.11.
#
# Its own venv on purpose: aider-chat pins ~100 packages exactly (litellm, openai, pydantic,
# httpx, ...) and those pins must not bend clibridge's. Layout:
#   .cache/aider/venv/bin/aider
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/_npm_pinned.sh"   # pinned_present / pip_venv_into / pinned_done
dest="${CLIBRIDGE_AIDER_DIR:-$here/.cache/aider}"
py="${PYTHON:-python3}"
pkg="aider-chat==0.86.2"
stamp="$dest/.installed"
exe="$dest/venv/bin/aider"
if pinned_present "$stamp" "$pkg" "$exe"; then
  echo "aider already installed in $dest ($pkg)"
  exit 0
fi
start=$(date +%s)
rm -f "$stamp"
pip_venv_into "$dest" "$py" "$pkg"
"$exe" --version >/dev/null
pinned_done "$stamp" "$pkg" "$dest" "$start"
