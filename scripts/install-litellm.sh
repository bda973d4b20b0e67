#!/usr/bin/env bash
# Install the pinned LiteLLM proxy (litellm[proxy] from PyPI) into its own venv in an ignored
# cache directory of the repo, for the scale-out tests (tests/scale) and bench/litellm_sticky.py.
# Idempotent: when the pinned version is already there it returns at once.
#
# Pinned to 1.108.7: the newest whose proxy extra resolves on PyPI (later ones pin a
# litellm-proxy or litellm-proxy-extras release PyPI does not serve).
#
# Its own venv on purpose: LiteLLM pins many packages (pydantic, httpx, openai, ...) and those
# pins must not bend clibridge's. Layout:
#   .cache/litellm/venv/bin/litellm
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/_npm_pinned.sh"   # pinned_present / pip_venv_into / pinned_done
dest="${CLIBRIDGE_LITELLM_DIR:-$here/.cache/litellm}"
py="${PYTHON:-python3}"
pkg="litellm[proxy]==1.108.7"
stamp="$dest/.installed"
exe="$dest/venv/bin/litellm"
if pinned_present "$stamp" "$pkg" "$exe"; then
  echo "litellm already installed in $dest ($pkg)"
  exit 0
fi
start=$(date +%s)
rm -f "$stamp"
pip_venv_into "$dest" "$py" "$pkg"
LITELLM_LOCAL_MODEL_COST_MAP=True "$exe" --version >/dev/null
pinned_done "$stamp" "$pkg" "$dest" "$start"
